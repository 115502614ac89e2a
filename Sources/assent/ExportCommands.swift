import AssentCore
import AssentStore
import AssentServer
import ArgumentParser
import Foundation

struct Export: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Stream every contact, preference or event as CSV or NDJSON, for a data warehouse.",
        discussion: """
            Contacts (erased ones with empty personal fields), preferences (the current state per contact and topic) or \
            events (the whole ledger, in each contact's order, with hashes; personal evidence stays sealed and is left out). \
            Memory stays flat whatever the size; progress goes to standard error.
            """)
    enum Kind: String, ExpressibleByArgument, CaseIterable { case contacts, preferences, events }

    @OptionGroup var store: StoreOptions
    @Argument(help: "contacts, preferences or events.") var kind: Kind
    @Option(help: "csv or ndjson.") var format: String = "csv"
    @Option(help: "Write to this file instead of standard output.") var output: String?

    func run() async throws {
        guard ["csv", "ndjson"].contains(format) else { throw ValidationError("--format: '\(format)' must be csv or ndjson") }
        let ledger = try await store.openLedger()
        let sink: FileHandle
        if let output {
            guard FileManager.default.createFile(atPath: output, contents: nil) else { throw ValidationError("--output: cannot write \(output)") }
            sink = try FileHandle(forWritingTo: URL(fileURLWithPath: output))
        } else {
            sink = .standardOutput
        }
        let writer = ExportWriter(format: format, sink: sink)
        let started = Date()
        switch kind {
        case .contacts:
            writer.header(["id", "email", "name", "external_id", "locale", "created_at", "updated_at", "erased_at", "objected_at"])
            var after: UUID?
            while true {
                let page = try await ledger.store.contacts(after: after, limit: 1_000)
                for c in page {
                    writer.row([("id", c.id.uuidString.lowercased()), ("email", c.isErased ? nil : c.email.value), ("name", c.name),
                                ("external_id", c.externalID), ("locale", c.locale), ("created_at", c.createdAt.display),
                                ("updated_at", c.updatedAt.display), ("erased_at", c.erasedAt?.display), ("objected_at", c.objectedAt?.display)])
                }
                writer.flush(progress: started)
                guard page.count == 1_000, let last = page.last else { break }
                after = last.id
            }
        case .preferences, .events:
            if kind == .preferences {
                writer.header(["contact_id", "topic", "state", "since", "expires_at", "seq"])
            } else {
                writer.header(["id", "contact_id", "seq", "topic", "action", "from", "to", "source", "channel", "actor_kind", "actor_id",
                               "occurred_at", "recorded_at", "expires_at", "notice_version", "form_id", "form_version", "batch_id", "prev_hash", "hash"])
            }
            let at = Date()
            let kind = self.kind
            try await ledger.store.scanChains { chain in
                if kind == .preferences {
                    for p in chain.preferences.sorted(by: { $0.topicKey < $1.topicKey }) {
                        writer.row([("contact_id", chain.contactID.uuidString.lowercased()), ("topic", p.topicKey), ("state", p.effectiveState(at: at).rawValue),
                                    ("since", p.since.display), ("expires_at", p.expiresAt?.display), ("seq", String(p.seq))])
                    }
                } else {
                    for e in chain.events {
                        writer.row([("id", e.id.uuidString.lowercased()), ("contact_id", e.contactID.uuidString.lowercased()), ("seq", String(e.seq)),
                                    ("topic", e.topicKey), ("action", e.action.rawValue), ("from", e.fromState.rawValue), ("to", e.toState.rawValue),
                                    ("source", e.source.rawValue), ("channel", e.channel?.rawValue), ("actor_kind", e.actor.kind.rawValue),
                                    ("actor_id", e.actor.id), ("occurred_at", e.occurredAt.display), ("recorded_at", e.recordedAt.display),
                                    ("expires_at", e.expiresAt?.display), ("notice_version", e.noticeVersion.map(String.init)), ("form_id", e.formID),
                                    ("form_version", e.formVersion.map(String.init)), ("batch_id", e.batchID),
                                    ("prev_hash", e.prevHash.map { String(format: "%02x", $0) }.joined()), ("hash", e.hash.map { String(format: "%02x", $0) }.joined())])
                    }
                }
                writer.flushIfFull(progress: started)
            }
            writer.flush(progress: started)
        }
        FileHandle.standardError.write(Data("\r\(writer.rows) \(kind.rawValue) rows in \(String(format: "%.1f", Date().timeIntervalSince(started))) s\(output.map { " -> \($0)" } ?? "")\n".utf8))
        if output != nil { try sink.close() }
    }
}

/// Rows to CSV (RFC 4180, formulas defused) or NDJSON, buffered in chunks.
final class ExportWriter: @unchecked Sendable {
    let format: String
    let sink: FileHandle
    private var buffer = ""
    private(set) var rows = 0

    init(format: String, sink: FileHandle) {
        self.format = format
        self.sink = sink
    }

    func header(_ names: [String]) {
        if format == "csv" { buffer += names.joined(separator: ",") + "\r\n" }
    }

    func row(_ fields: [(String, String?)]) {
        rows += 1
        if format == "csv" {
            buffer += fields.map { AudienceRows.csv($0.1 ?? "") }.joined(separator: ",") + "\r\n"
        } else {
            var object: [String: Any] = [:]
            for (name, value) in fields { object[name] = value ?? NSNull() }
            if let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes]) {
                buffer += String(decoding: data, as: UTF8.self) + "\n"
            }
        }
    }

    func flushIfFull(progress started: Date) {
        if buffer.utf8.count >= 1 << 20 { flush(progress: started) }
    }

    func flush(progress started: Date) {
        sink.write(Data(buffer.utf8))
        buffer.removeAll(keepingCapacity: true)
        let rate = Double(rows) / max(Date().timeIntervalSince(started), 0.001)
        FileHandle.standardError.write(Data("\r\(rows) rows, \(Int(rate))/s".utf8))
    }
}
