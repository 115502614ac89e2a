import AssentCore
import Foundation

/// A JSON object written directly, keys given in sorted order by the caller, optionals as
/// `null` (as the explicit `encode(to:)` of the wire types writes them).
struct JSONObjectBytes {
    var out: [UInt8]
    private var first = true

    init(into out: [UInt8]) { self.out = out }

    mutating func key(_ name: StaticString) {
        out.append(first ? UInt8(ascii: "{") : UInt8(ascii: ","))
        first = false
        JSONBytes.appendKey(name, to: &out)
    }

    mutating func string(_ name: StaticString, _ value: String?) {
        key(name)
        if let value { JSONBytes.appendString(value, to: &out) } else { JSONBytes.appendRaw("null", to: &out) }
    }

    mutating func integer(_ name: StaticString, _ value: (some BinaryInteger)?) {
        key(name)
        if let value { JSONBytes.appendInteger(value, to: &out) } else { JSONBytes.appendRaw("null", to: &out) }
    }

    mutating func bool(_ name: StaticString, _ value: Bool) {
        key(name)
        JSONBytes.appendBool(value, to: &out)
    }

    mutating func date(_ name: StaticString, _ value: Date?) {
        key(name)
        guard let value else { return JSONBytes.appendRaw("null", to: &out) }
        out.append(UInt8(ascii: "\""))
        UTCTime.appendRFC3339(&out, millisecondsSince1970: value.millisecondsSince1970)
        out.append(UInt8(ascii: "\""))
    }

    /// An array under `name`, each element written by `body` into the same bytes.
    mutating func array<T>(_ name: StaticString, _ items: [T], _ body: (T, inout [UInt8]) -> Void) {
        key(name)
        out.append(UInt8(ascii: "["))
        for (i, item) in items.enumerated() {
            if i > 0 { out.append(UInt8(ascii: ",")) }
            body(item, &out)
        }
        out.append(UInt8(ascii: "]"))
    }

    /// A nested object under `name`, written into the same bytes.
    mutating func object(_ name: StaticString, _ body: (inout JSONObjectBytes) -> Void) {
        key(name)
        JSONObjectBytes.write(body, into: &out)
    }

    /// Appends the object `body` writes to `out`. The bytes are moved in and out (swapped),
    /// never copied: a nested object appends to its parent's buffer.
    static func write(_ body: (inout JSONObjectBytes) -> Void, into out: inout [UInt8]) {
        var object = JSONObjectBytes(into: [])
        swap(&object.out, &out)
        body(&object)
        if object.first { object.out.append(UInt8(ascii: "{")) }
        object.out.append(UInt8(ascii: "}"))
        swap(&object.out, &out)
    }
}

extension ChangeResultJSON {
    /// The bytes `JSONCoding.encoder` writes for this (sorted keys, a trailing newline), written
    /// directly: JSONEncoder was 12% of the server's CPU per recorded change (perf, scenario 3).
    /// A test holds the two equal.
    var encoded: Data {
        var out = [UInt8]()
        out.reserveCapacity(1_024 + recorded.count * 700 + preferences.count * 160)
        JSONObjectBytes.write({ o in
            o.array("confirmationRequestedFor", confirmationRequestedFor) { JSONBytes.appendString($0, to: &$1) }
            o.string("contactId", contactId)
            o.string("message", message)
            o.array("preferences", preferences) { p, out in
                JSONObjectBytes.write({ o in
                    o.string("category", p.category)
                    o.date("expiresAt", p.expiresAt)
                    o.bool("mayEmail", p.mayEmail)
                    o.date("since", p.since)
                    o.string("state", p.state)
                    o.string("title", p.title)
                    o.string("topic", p.topic)
                }, into: &out)
            }
            o.array("recorded", recorded) { e, out in e.write(into: &out) }
            o.array("unchanged", unchanged) { u, out in
                JSONObjectBytes.write({ o in
                    o.string("reason", u.reason)
                    o.string("state", u.state)
                    o.string("topic", u.topic)
                }, into: &out)
            }
        }, into: &out)
        out.append(UInt8(ascii: "\n"))
        return Data(out)
    }
}

extension EventJSON {
    /// This event as `JSONCoding.encoder` writes it (sorted keys, nulls kept).
    func write(into out: inout [UInt8]) {
        JSONObjectBytes.write({ o in
            o.string("action", action)
            o.object("actor") { a in
                a.string("id", actor.id)
                a.string("kind", actor.kind)
            }
            o.string("batchId", batchId)
            o.string("channel", channel)
            o.string("contactId", contactId)
            o.object("evidence") { v in
                v.string("formId", evidence.formId)
                v.integer("formVersion", evidence.formVersion)
                v.string("ip", evidence.ip)
                v.string("note", evidence.note)
                v.bool("shredded", evidence.shredded)
                v.string("userAgent", evidence.userAgent)
            }
            o.date("expiresAt", expiresAt)
            o.string("from", from)
            o.string("hash", hash)
            o.string("id", id)
            o.integer("noticeVersion", noticeVersion)
            o.date("occurredAt", occurredAt)
            o.string("prevHash", prevHash)
            o.date("recordedAt", recordedAt)
            o.integer("seq", seq)
            o.string("source", source)
            o.string("to", to)
            o.string("topic", topic)
        }, into: &out)
    }
}
