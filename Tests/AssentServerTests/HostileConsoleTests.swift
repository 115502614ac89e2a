import AssentCore
@testable import AssentServer
import AssentStore
import AssentTestSupport
import Foundation
import Hummingbird
import HummingbirdTesting
import Testing

/// The staff console's forms and its CSV upload get the hostile payloads of
/// `HostileInputTests`: each is refused or stored, and every page shows it
/// escaped; nothing answers 5xx. On every store.
@Suite struct HostileConsoleTests {
    /// Every field name any console form reads, so that each payload reaches whichever of them a route uses.
    static let fields = ["askName", "category", "channel", "contact", "description", "doi", "email", "enabled", "event", "evidence", "externalId",
                         "id", "identity", "introduction", "key", "kind", "lifetime", "locale", "match", "name", "note", "notice", "occurred",
                         "origins", "outcome", "reason", "received", "repermission", "role", "scope", "since", "source", "successUrl", "text",
                         "title", "topic", "url", "change-news", "notice-news"]

    static func formEncoded(_ value: String) -> String {
        var allowed = CharacterSet.alphanumerics
        allowed.remove(charactersIn: "+&=")
        return value.addingPercentEncoding(withAllowedCharacters: allowed) ?? ""
    }

    @Test(arguments: StoreKind.available)
    func everyConsoleFormRefusesOrKeepsHostileValuesAndShowsThemEscaped(_ kind: StoreKind) async throws {
        try await withAPI(kind) { api in
            try await api.createTopic("news", doubleOptIn: false)
            let contact = try await api.createContact("jo@example.com")
            _ = try await api.send(.post, "/api/v1/forms", json: ["id": "newsletter", "title": "News", "topics": ["news"]])
            _ = try await api.send(.post, "/api/v1/segments", json: ["id": "fans", "name": "Fans", "topics": ["news"]])
            let hook = try #require(try await api.send(.post, "/api/v1/webhooks", json: ["url": "http://127.0.0.1:9/hooks", "events": ["contact.created"],
                                                                                         "allowPrivateNetwork": true]).json["id"] as? String)
            let admin = try await staff(api, .admin)
            let routes = ConsolePages(ledger: api.ledger, pages: try await Pages(site: SiteConfiguration()), signInLimiter: RateLimiter(limit: 100)).routes
                .filter { $0.method == .post && !$0.upload && $0.roles != nil && $0.path != "/console/signout" && !$0.path.contains("password") }
            var sent = 0
            var failures: [String] = []
            for route in routes {
                // Paths for things that exist; a route that deletes or erases them runs last for its kind, once per payload, harmlessly.
                let path = route.path.replacingOccurrences(of: "{id}", with: route.path.hasPrefix("/console/contacts") ? contact
                    : route.path.hasPrefix("/console/forms") ? "newsletter" : route.path.hasPrefix("/console/segments") ? "fans"
                    : route.path.hasPrefix("/console/webhooks") ? hook : "unknown")
                    .replacingOccurrences(of: "{key}", with: "news").replacingOccurrences(of: "{version}", with: "1")
                    .replacingOccurrences(of: "{delivery}", with: UUID().uuidString.lowercased())
                for payload in HostileInputTests.payloads {
                    let value = Self.formEncoded(payload)
                    let r = try await admin.post(path, Self.fields.map { "\($0)=\(value)" }.joined(separator: "&"))
                    sent += 1
                    if r.status.code >= 500 { failures.append("\(route.path) with \(payload.prefix(30)): \(r.status.code)") }
                    #expect(!r.text.contains("<script>alert(1)") && !r.text.contains("<img src=x"), "\(route.path) echoed markup")
                }
            }
            #expect(failures.isEmpty, "\(failures.count) of \(sent) hostile console posts failed:\n\(failures.prefix(10).joined(separator: "\n"))")
            #expect(routes.count > 15)
            // Whatever was kept is shown escaped on every page that lists it.
            for page in ["/console", "/console/contacts/\(contact)", "/console/topics", "/console/forms", "/console/segments", "/console/webhooks",
                         "/console/audit", "/console/requests", "/console/users"] {
                let r = try await admin.get(page)
                #expect(r.status.code < 500, "\(page): \(r.status)")
                #expect(!r.text.contains("<script>alert(1)") && !r.text.contains("<img src=x"), "\(page) shows markup unescaped")
            }
            #expect(try await api.ledger.verify().isIntact)
            print("hostile console input (\(kind)): \(sent) posts to \(routes.count) console forms, none failed")
        }
    }

    @Test(arguments: StoreKind.available)
    func aHostileCSVUploadIsRefusedOrImportedAndShownEscaped(_ kind: StoreKind) async throws {
        try await withAPI(kind) { api in
            try await api.createTopic("news", doubleOptIn: false)
            let admin = try await staff(api, .admin)
            func upload(_ csv: [UInt8]) async throws -> APIHarness.Reply {
                let boundary = "----assent-hostile-boundary"
                var body = Array("--\(boundary)\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\n\(admin.csrf)\r\n".utf8)
                body += Array("--\(boundary)\r\nContent-Disposition: form-data; name=\"evidence\"\r\n\r\nPaper forms; notice v1\r\n".utf8)
                body += Array("--\(boundary)\r\nContent-Disposition: form-data; name=\"file\"; filename=\"<script>.csv\"\r\nContent-Type: text/csv\r\n\r\n".utf8)
                body += csv + Array("\r\n--\(boundary)--\r\n".utf8)
                var headers = HTTPFields()
                headers[.cookie] = admin.cookie
                headers[.contentType] = "multipart/form-data; boundary=\(boundary)"
                let response = try await api.client.executeRequest(uri: "/console/import", method: .post, headers: headers, body: ByteBuffer(bytes: body))
                return APIHarness.Reply(status: response.status, headers: response.headers, body: Data(response.body.readableBytesView))
            }
            func quoted(_ text: String) -> String { "\"" + text.replacingOccurrences(of: "\"", with: "\"\"") + "\"" }
            // Every payload as an address and as a name: a file with any bad row is refused whole, its problems listed escaped.
            var refused = "email,name,external_id,locale,news\r\n"
            for (i, payload) in HostileInputTests.payloads.enumerated() {
                refused += "p\(i)@example.com,\(quoted(payload)),\(quoted(payload)),en,yes\r\n\(quoted(payload)),x,,en,yes\r\n"
            }
            // Markup, SQL, template syntax, formulas and odd characters as names: a valid file, imported and kept as written.
            let names = Array(HostileInputTests.payloads.prefix(8)) + ["\u{202E}gnp.exe", "e\u{0301}😀\u{FEFF}", "=HYPERLINK(\"http://evil\")", "+1", "@SUM(A1)"]
            var accepted = "email,name,news\r\n"
            for (i, name) in names.enumerated() { accepted += "p\(i)@example.com,\(quoted(name)),yes\r\n" }
            let files: [[UInt8]] = [Array(accepted.utf8), Array(refused.utf8), [0xEF, 0xBB, 0xBF] + Array(refused.utf8), [0xFF, 0xFE, 0x00, 0x65] + Array(refused.utf8),
                                    Array("email,news\r\n\"unterminated,yes\r\n".utf8), Array("\u{0}\u{0}\u{0}".utf8), [],
                                    Array((String(repeating: "a,", count: 20_000) + "\r\n").utf8)]
            var previews = 0
            for file in files {
                let dry = try await upload(file)
                #expect(dry.status.code < 500, "upload of \(file.prefix(12)): \(dry.status)")
                #expect(!dry.text.contains("<script>alert(1)") && !dry.text.contains("<img src=x") && !dry.text.contains("<script>.csv"), "the preview shows markup")
                guard let action = dry.text.range(of: #"/console/import/[0-9a-f-]{36}"#, options: .regularExpression).map({ String(dry.text[$0]) }) else { continue }
                previews += 1
                let done = try await admin.post(action)
                #expect(done.status.code < 500, "import: \(done.status)")
                #expect(!done.text.contains("<script>alert(1)") && !done.text.contains("<img src=x"))
            }
            #expect(previews == 1, "only the well-formed file was previewed and imported")
            // What was imported is stored exactly as written and shown escaped.
            for (i, name) in names.enumerated() {
                #expect(try await api.ledger.store.contact(email: EmailAddress("p\(i)@example.com"))?.name == name, "row \(i + 2)")
            }
            let kept = try await api.ledger.store.contact(email: EmailAddress("p4@example.com"))
            #expect(kept?.name == "<script>alert(1)</script>")
            let page = try await admin.get("/console/contacts/\(try #require(kept).id.uuidString.lowercased())")
            #expect(page.status == .ok && !page.text.contains("<script>alert(1)") && page.text.contains("&lt;script&gt;alert(1)&lt;/script&gt;"))
            #expect(try await api.ledger.verify().isIntact)
            print("hostile CSV (\(kind)): \(files.count) files, \(previews) previewed and imported, none failed")
        }
    }
}
