import AssentCore
import Foundation

/// What a data-warehouse export holds.
public enum ExportKind: String, Sendable, CaseIterable {
    /// Every contact; erased ones keep their id and dates, with empty personal fields.
    case contacts
    /// The current state per contact and topic.
    case preferences
    /// The whole ledger, in each contact's order, with hashes; personal evidence stays sealed and is left out.
    case events
}

/// The text format of an export or a report download.
public enum ExportFormat: String, Sendable, CaseIterable {
    case csv, ndjson
}

/// Writes rows as CSV (RFC 4180; a leading `= + - @` tab or CR is defused
/// with `'` so that a spreadsheet does not run it as a formula) or NDJSON.
public enum TextRows {
    public static func csvField(_ field: String) -> String {
        var text = field
        if let first = text.utf8.first, first == UInt8(ascii: "=") || first == UInt8(ascii: "+") || first == UInt8(ascii: "-")
            || first == UInt8(ascii: "@") || first == 9 || first == 13 {
            text = "'" + text
        }
        guard text.utf8.contains(where: { $0 == UInt8(ascii: ",") || $0 == UInt8(ascii: "\"") || $0 == 10 || $0 == 13 }) else { return text }
        return "\"" + text.replacingOccurrences(of: "\"", with: "\"\"") + "\""
    }

    public static func csvLine(_ fields: [String]) -> String {
        fields.map(csvField).joined(separator: ",") + "\r\n"
    }

    /// `csvField`'s text appended to `out` as bytes (an audience export writes millions; a test holds the two equal).
    public static func appendCSVField(_ field: String, to out: inout [UInt8]) {
        var field = field
        field.withUTF8 { appendCSVField($0, to: &out) }
    }

    /// Over a buffer, not a generic collection: across modules a generic was not specialised and paid a witness call per byte.
    public static func appendCSVField(_ bytes: UnsafeBufferPointer<UInt8>, to out: inout [UInt8]) {
        var defuse = false, quote = false
        if let first = bytes.first {
            defuse = first == UInt8(ascii: "=") || first == UInt8(ascii: "+") || first == UInt8(ascii: "-") || first == UInt8(ascii: "@") || first == 9 || first == 13
        }
        for byte in bytes where byte == UInt8(ascii: ",") || byte == UInt8(ascii: "\"") || byte == 10 || byte == 13 {
            quote = true
            break
        }
        if quote { out.append(UInt8(ascii: "\"")) }
        if defuse { out.append(UInt8(ascii: "'")) }
        if quote {
            for byte in bytes {
                out.append(byte)
                if byte == UInt8(ascii: "\"") { out.append(byte) }
            }
            out.append(UInt8(ascii: "\""))
        } else {
            out.append(contentsOf: bytes)
        }
    }

    /// `jsonString`'s text appended to `out` as bytes (a test holds the two equal).
    public static func appendJSONString(_ text: String, to out: inout [UInt8]) {
        JSONBytes.appendString(text, to: &out, escaping: .lineSafe)
    }

    public static func appendJSONString(_ bytes: UnsafeBufferPointer<UInt8>, to out: inout [UInt8]) {
        JSONBytes.appendString(bytes, to: &out, escaping: .lineSafe)
    }

    /// One JSON object per line, keys sorted; nil becomes null, and the
    /// fields named in `numbers` (decimal integers) are written as numbers.
    public static func ndjsonLine(_ fields: [(String, String?)], numbers: Set<String> = []) -> String {
        var out = "{"
        for (i, (name, value)) in fields.sorted(by: { $0.0 < $1.0 }).enumerated() {
            if i > 0 { out += "," }
            out += jsonString(name) + ":"
            if let value, numbers.contains(name), Int64(value) != nil { out += value } else { out += value.map(jsonString) ?? "null" }
        }
        return out + "}\n"
    }

    /// A JSON string literal (RFC 8259: quotation mark, reverse solidus and controls escaped).
    public static func jsonString(_ text: String) -> String {
        var out = "\""
        out.reserveCapacity(text.utf8.count + 2)
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where scalar.value < 0x20 || scalar.value == 0x2028 || scalar.value == 0x2029:
                let hex = String(scalar.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }
}

extension Ledger {
    /// The columns of an export, in order.
    public static func exportColumns(_ kind: ExportKind) -> [String] {
        switch kind {
        case .contacts: ["id", "email", "name", "external_id", "locale", "created_at", "updated_at", "erased_at", "objected_at"]
        case .preferences: ["contact_id", "topic", "state", "since", "expires_at", "seq"]
        case .events:
            ["id", "contact_id", "seq", "topic", "action", "from", "to", "source", "channel", "actor_kind", "actor_id",
             "occurred_at", "recorded_at", "expires_at", "notice_version", "form_id", "form_version", "batch_id", "prev_hash", "hash"]
        }
    }

    /// Streams every contact, preference or event as CSV (with a header) or
    /// NDJSON, a page at a time: `emit` gets about `chunkBytes` of text at a
    /// time (and the row count so far), so memory stays flat whatever the size.
    /// Times are RFC 3339 UTC with milliseconds; a preference's state is its
    /// effective state at `now` (a lapsed grant reads `expired`).
    public func export(_ kind: ExportKind, format: ExportFormat, pageSize: Int = 1_000, chunkBytes: Int = 1 << 18,
                       emit: (String, Int) async throws -> Void) async throws -> Int {
        let columns = Self.exportColumns(kind)
        var buffer = format == .csv ? columns.joined(separator: ",") + "\r\n" : ""
        var rows = 0
        func add(_ values: [String?]) {
            rows += 1
            if format == .csv {
                buffer += TextRows.csvLine(values.map { $0 ?? "" })
            } else {
                buffer += TextRows.ndjsonLine(Array(zip(columns, values)), numbers: ["seq", "notice_version", "form_version"])
            }
        }
        func flush(force: Bool) async throws {
            if buffer.utf8.count >= chunkBytes || (force && !buffer.isEmpty) {
                try await emit(buffer, rows)
                buffer.removeAll(keepingCapacity: true)
            }
        }
        let time = { (date: Date?) in date.map { UTCTime.rfc3339($0) } }
        let at = now
        switch kind {
        case .contacts:
            var after: UUID?
            while true {
                let page = try await store.contacts(after: after, limit: pageSize)
                for c in page {
                    add([c.id.uuidString.lowercased(), c.isErased ? nil : c.email.value, c.name, c.externalID, c.locale,
                         time(c.createdAt), time(c.updatedAt), time(c.erasedAt), time(c.objectedAt)])
                }
                try await flush(force: false)
                guard page.count == pageSize, let last = page.last else { break }
                after = last.id
            }
        case .preferences:
            var after: (UUID, String)?
            while true {
                let page = try await store.preferencesPage(after: after, limit: pageSize)
                for p in page {
                    add([p.contactID.uuidString.lowercased(), p.topicKey, p.effectiveState(at: at).rawValue, time(p.since), time(p.expiresAt), String(p.seq)])
                }
                try await flush(force: false)
                guard page.count == pageSize, let last = page.last else { break }
                after = (last.contactID, last.topicKey)
            }
        case .events:
            var after: (UUID, Int64)?
            while true {
                let page = try await store.eventsPage(after: after, limit: pageSize)
                for e in page {
                    add([e.id.uuidString.lowercased(), e.contactID.uuidString.lowercased(), String(e.seq), e.topicKey, e.action.rawValue,
                         e.fromState.rawValue, e.toState.rawValue, e.source.rawValue, e.channel?.rawValue, e.actor.kind.rawValue, e.actor.id,
                         time(e.occurredAt), time(e.recordedAt), time(e.expiresAt), e.noticeVersion.map(String.init), e.formID,
                         e.formVersion.map(String.init), e.batchID, e.prevHash.hexString, e.hash.hexString])
                }
                try await flush(force: false)
                guard page.count == pageSize, let last = page.last else { break }
                after = (last.contactID, last.seq)
            }
        }
        try await flush(force: true)
        return rows
    }
}
