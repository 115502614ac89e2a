import Foundation

extension UUID {
    /// A random (version 4) UUID from the system generator (one getrandom).
    /// Foundation's `UUID()` on Linux opens /dev/urandom for every one; an
    /// import makes four or five per row, and those opens were a twentieth of its time.
    public static func random() -> UUID {
        var bytes = (UInt64(0), UInt64(0))
        return withUnsafeMutableBytes(of: &bytes) { raw in
            SecureRandom.fill(raw)
            raw[6] = (raw[6] & 0x0F) | 0x40 // version 4
            raw[8] = (raw[8] & 0x3F) | 0x80 // RFC 4122 variant
            return UUID(uuid: (raw[0], raw[1], raw[2], raw[3], raw[4], raw[5], raw[6], raw[7],
                               raw[8], raw[9], raw[10], raw[11], raw[12], raw[13], raw[14], raw[15]))
        }
    }

    /// A time-ordered (version 7, RFC 9562) UUID: 48 bits of Unix milliseconds, 12 bits of the
    /// fraction of the millisecond (RFC 9562 6.2, method 3), then 62 random bits. Ids made later sort
    /// later, so every index keyed by one (contacts, events, outbox, ...) grows at its end instead of
    /// at random places: in a raw SQLite insert of an import's rows (one contact, its key, three events,
    /// their preferences and chain head) that doubled the rate, 9,523 -> 21,350 events/s at 100,000
    /// contacts on this machine, because each transaction dirties a few pages per index, not one per row.
    /// The creation time an id reveals is stored beside it anyway.
    public static func timeOrdered(at date: Date = Date()) -> UUID {
        var generator = SystemRandomNumberGenerator()
        let seconds = date.timeIntervalSince1970
        let milliseconds = UInt64(max(0, (seconds * 1000).rounded(.down)))
        let fraction = UInt64(max(0, min(4095, ((seconds * 1000) - Double(milliseconds)) * 4096)))
        var random = (generator.next() as UInt64)
        let high = milliseconds << 16 | 0x7000 | fraction
        return withUnsafeMutableBytes(of: &random) { tail in
            var bytes = [UInt8](repeating: 0, count: 16)
            for i in 0..<8 { bytes[i] = UInt8(truncatingIfNeeded: high >> (56 - 8 * UInt64(i))) }
            for i in 0..<8 { bytes[8 + i] = tail[i] }
            bytes[8] = (bytes[8] & 0x3F) | 0x80 // RFC 9562 variant
            return UUID(uuid: (bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7],
                               bytes[8], bytes[9], bytes[10], bytes[11], bytes[12], bytes[13], bytes[14], bytes[15]))
        }
    }

    /// `uuidString.lowercased()` as UTF-8 bytes, without making either string (hashing an event
    /// spent a tenth of `assent verify` lower-casing them).
    public var lowercasedUTF8: [UInt8] {
        let digits: StaticString = "0123456789abcdef"
        var out = [UInt8]()
        out.reserveCapacity(36)
        withUnsafeBytes(of: uuid) { raw in
            digits.withUTF8Buffer { hex in
                for (i, byte) in raw.enumerated() {
                    if i == 4 || i == 6 || i == 8 || i == 10 { out.append(UInt8(ascii: "-")) }
                    out.append(hex[Int(byte >> 4)])
                    out.append(hex[Int(byte & 0x0F)])
                }
            }
        }
        return out
    }
}

extension UUID {
    /// The lower-case text form (as stored in SQLite's tables), made without
    /// `uuidString` and `lowercased()`.
    public var lowercasedString: String { String(decoding: lowercasedUTF8, as: UTF8.self) }

    /// Parses the 36-character text form, in either case. Foundation's
    /// `UUID(uuidString:)` goes through `sscanf`, which was a tenth of
    /// `assent verify`'s time reading ids back. Anything else is nil (stricter
    /// than Foundation, which lets a space stand for a leading digit).
    public init?(text: String) {
        var text = text
        guard let uuid = text.withUTF8({ Self.parse(utf8: $0) }) else { return nil }
        self.init(uuid: uuid)
    }

    /// The same from UTF-8 bytes (a column's text read where it lies, with no String made).
    public init?(utf8: UnsafeBufferPointer<UInt8>) {
        guard let uuid = Self.parse(utf8: utf8) else { return nil }
        self.init(uuid: uuid)
    }

    private static func parse(utf8: UnsafeBufferPointer<UInt8>) -> uuid_t? {
        guard utf8.count == 36 else { return nil }
        var uuid: uuid_t = (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        // Into the tuple's own bytes: an array per id was a twentieth of an audience export's read.
        let parsed = withUnsafeMutableBytes(of: &uuid) { bytes -> Bool in
            var n = 0, i = 0
            while i < 36 {
                if i == 8 || i == 13 || i == 18 || i == 23 {
                    guard utf8[i] == UInt8(ascii: "-") else { return false }
                    i += 1
                    continue
                }
                guard let high = HexDigit.value(utf8[i]), let low = HexDigit.value(utf8[i + 1]) else { return false }
                bytes[n] = high << 4 | low
                n += 1
                i += 2
            }
            return true
        }
        return parsed ? uuid : nil
    }
}

/// The value of one hexadecimal digit (either case).
enum HexDigit {
    static func value(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}
