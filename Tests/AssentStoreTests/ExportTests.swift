import AssentCore
import AssentStore
import AssentTestSupport
import Foundation
import Testing

/// The data-warehouse export: every row once, in order, across page boundaries, on every store.
@Suite struct ExportTests {
    @Test(arguments: StoreKind.available)
    func everyRowOnceAcrossPagesAsCSVAndNDJSON(_ kind: StoreKind) async throws {
        let clock = TestClock(Date(timeIntervalSince1970: 1_795_867_215.28))
        let ledger = try await kind.makeLedger(now: { clock.now })
        _ = try await ledger.createTopic(Topic(key: "news", title: "News", consentLifetimeDays: 30, createdAt: Date()), noticeText: "News.")
        _ = try await ledger.createTopic(Topic(key: "offers", title: "Offers", createdAt: Date()), noticeText: "Offers.")
        var contacts: [Contact] = []
        for i in 0..<7 {
            let c = try await ledger.createContact(email: EmailAddress("p\(i)@example.com"), name: i == 3 ? "=HYPERLINK(\"x\")" : "P, \(i)", externalID: nil, locale: nil)
            contacts.append(c)
            _ = try await ledger.recordChange(ChangeRequest(contactID: c.id, changes: [TopicChange(topicKey: "news", intent: .optIn),
                                                                                     TopicChange(topicKey: "offers", intent: .optIn)],
                                                            source: .api, actor: .apiKey("k")))
            if i % 2 == 0 {
                _ = try await ledger.recordChange(ChangeRequest(contactID: c.id, changes: [TopicChange(topicKey: "offers", intent: .optOut)],
                                                                source: .api, actor: .apiKey("k")))
            }
        }
        clock.now = clock.now.addingTimeInterval(31 * 86_400) // news grants have lapsed

        func run(_ what: ExportKind, _ format: ExportFormat) async throws -> (text: String, rows: Int, chunks: Int) {
            var text = "", chunks = 0
            // Pages of 3 and tiny chunks, so that every page and chunk boundary is crossed.
            let rows = try await ledger.export(what, format: format, pageSize: 3, chunkBytes: 64) { chunk, _ in
                text += chunk
                chunks += 1
            }
            return (text, rows, chunks)
        }

        // Contacts: 7, each once, with a header; a formula is defused, a comma quoted.
        let contactsCSV = try await run(.contacts, .csv)
        var lines = contactsCSV.text.components(separatedBy: "\r\n").dropLast()
        #expect(contactsCSV.rows == 7 && lines.count == 8 && contactsCSV.chunks == 3, "a chunk per page of 3")
        #expect(lines.first == "id,email,name,external_id,locale,created_at,updated_at,erased_at,objected_at")
        #expect(Set(lines.dropFirst().map { String($0.prefix(36)) }) == Set(contacts.map { $0.id.uuidString.lowercased() }))
        #expect(lines.contains { $0.contains(",p3@example.com,'=HYPERLINK(\"\"x\"\")\",") == false && $0.contains("\"'=HYPERLINK(\"\"x\"\")\"") })
        #expect(lines.contains { $0.contains(",p1@example.com,\"P, 1\",,,2026-11-28T12:00:15.280Z,") }, "times to the millisecond: \(lines)")

        // Preferences: 14 rows in (contact, topic) order; news lapsed reads expired.
        let prefs = try await run(.preferences, .ndjson)
        let objects = try prefs.text.split(separator: "\n").map { try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any] }
        #expect(prefs.rows == 14 && objects.count == 14)
        let order = objects.map { "\($0["contact_id"]!)/\($0["topic"]!)" }
        #expect(order == order.sorted() && Set(order).count == 14)
        #expect(objects.filter { $0["topic"] as? String == "news" }.allSatisfy { $0["state"] as? String == "expired" })
        #expect(objects.filter { $0["topic"] as? String == "offers" && $0["state"] as? String == "withdrawn" }.count == 4)
        #expect(objects.allSatisfy { $0["seq"] is NSNumber && $0["expires_at"] != nil }, "seq is a number; a missing time is null")

        // Events: every event of every contact, in chain order, each with its hash linking to the one before.
        let events = try await run(.events, .csv)
        lines = events.text.components(separatedBy: "\r\n").dropLast()
        #expect(events.rows == 18 && lines.count == 19, "7 x 2 opt-ins + 4 opt-outs")
        let rows = lines.dropFirst().map { $0.components(separatedBy: ",") }
        let header = lines.first!.components(separatedBy: ",")
        let contactColumn = header.firstIndex(of: "contact_id")!, seqColumn = header.firstIndex(of: "seq")!
        let prev = header.firstIndex(of: "prev_hash")!, hash = header.firstIndex(of: "hash")!
        for (a, b) in zip(rows, rows.dropFirst()) {
            #expect(a[contactColumn] < b[contactColumn] || (a[contactColumn] == b[contactColumn] && Int(a[seqColumn])! + 1 == Int(b[seqColumn])!))
            if a[contactColumn] == b[contactColumn] { #expect(b[prev] == a[hash] && a[hash].count == 64) }
        }
        #expect(rows.allSatisfy { $0[header.firstIndex(of: "source")!] == "api" && $0[header.firstIndex(of: "actor_id")!] == "k" })
    }

    /// The byte writers an audience export uses write exactly what the String forms write.
    @Test func byteWritersMatchTheStringForms() {
        let fields = ["", "plain", "=SUM(A1)", "+1", "-x", "@home", "\tlead", "\rlead", "a,b", "say \"hi\"", "two\nlines", "cr\rhere",
                      "é ü ß", "😀,😀", "\u{2028}sep\u{2029}", "ctl\u{01}\u{1F}\u{7F}", "back\\slash", "=\"both\",", "\u{E2}\u{80}"]
        for field in fields {
            var csv: [UInt8] = [], json: [UInt8] = []
            TextRows.appendCSVField(field, to: &csv)
            TextRows.appendJSONString(field, to: &json)
            #expect(String(decoding: csv, as: UTF8.self) == TextRows.csvField(field), "\(field.debugDescription)")
            #expect(String(decoding: json, as: UTF8.self) == TextRows.jsonString(field), "\(field.debugDescription)")
        }
    }
}
