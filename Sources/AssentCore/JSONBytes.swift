import Foundation

/// JSON written straight into bytes, exactly as Foundation's `JSONEncoder` with
/// `[.sortedKeys, .withoutEscapingSlashes]` writes it, for the few hot answers where
/// JSONEncoder cost more than the work behind them (a consent check, a receipt).
/// Callers write their keys in sorted (UTF-8 byte) order themselves; tests hold
/// each hand-written form equal to JSONEncoder's.
public enum JSONBytes {
    /// How a string's characters are escaped.
    public enum Escaping: Sendable {
        /// As JSONEncoder: `\b \t \n \f \r` by name, other controls as `\u00xx`, the rest as it is.
        case encoder
        /// As Assent's NDJSON exports: `\t \n \r` by name, other controls and U+2028/U+2029
        /// (line ends to JavaScript) as `\uxxxx`.
        case lineSafe
    }

    /// A string literal, `"` and `\` escaped and the rest as `escaping` says; DEL and any other
    /// non-ASCII character as it is.
    public static func appendString(_ text: String, to out: inout [UInt8], escaping: Escaping = .encoder) {
        var text = text
        text.withUTF8 { appendString($0, to: &out, escaping: escaping) }
    }

    public static func appendString(_ bytes: UnsafeBufferPointer<UInt8>, to out: inout [UInt8], escaping: Escaping = .encoder) {
        let hex: StaticString = "0123456789abcdef"
        let lineSafe = escaping == .lineSafe
        out.append(UInt8(ascii: "\""))
        // Runs that need no escape are copied whole (a receipt's JWS is over a kilobyte of them).
        var start = 0, i = 0
        while i < bytes.count {
            let byte = bytes[i]
            let separator = lineSafe && byte == 0xE2 && i + 2 < bytes.count && bytes[i + 1] == 0x80 && (bytes[i + 2] == 0xA8 || bytes[i + 2] == 0xA9)
            guard byte < 0x20 || byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") || separator else {
                i += 1
                continue
            }
            if start < i { out.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[start..<i])) }
            switch byte {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"): out.append(UInt8(ascii: "\\")); out.append(byte)
            case 8 where !lineSafe: out.append(UInt8(ascii: "\\")); out.append(UInt8(ascii: "b"))
            case 9: out.append(UInt8(ascii: "\\")); out.append(UInt8(ascii: "t"))
            case 10: out.append(UInt8(ascii: "\\")); out.append(UInt8(ascii: "n"))
            case 12 where !lineSafe: out.append(UInt8(ascii: "\\")); out.append(UInt8(ascii: "f"))
            case 13: out.append(UInt8(ascii: "\\")); out.append(UInt8(ascii: "r"))
            case 0..<0x20:
                out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "u"), UInt8(ascii: "0"), UInt8(ascii: "0"),
                                        hex.utf8Start[Int(byte >> 4)], hex.utf8Start[Int(byte & 15)]])
            default: // U+2028 or U+2029
                out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "u"), UInt8(ascii: "2"), UInt8(ascii: "0"), UInt8(ascii: "2"),
                                        bytes[i + 2] == 0xA8 ? UInt8(ascii: "8") : UInt8(ascii: "9")])
                i += 2
            }
            i += 1
            start = i
        }
        if start < bytes.count { out.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[start..<bytes.count])) }
        out.append(UInt8(ascii: "\""))
    }

    public static func appendRaw(_ text: StaticString, to out: inout [UInt8]) {
        text.withUTF8Buffer { out.append(contentsOf: $0) }
    }

    public static func appendInteger(_ value: some BinaryInteger, to out: inout [UInt8]) {
        out.append(contentsOf: String(value).utf8)
    }

    public static func appendBool(_ value: Bool, to out: inout [UInt8]) {
        appendRaw(value ? "true" : "false", to: &out)
    }

    /// `"key":` (the key is one of the caller's own literals: nothing to escape).
    public static func appendKey(_ key: StaticString, to out: inout [UInt8]) {
        out.append(UInt8(ascii: "\""))
        appendRaw(key, to: &out)
        out.append(UInt8(ascii: "\""))
        out.append(UInt8(ascii: ":"))
    }

    public static func appendStrings(_ values: [String], to out: inout [UInt8]) {
        out.append(UInt8(ascii: "["))
        for (i, value) in values.enumerated() {
            if i > 0 { out.append(UInt8(ascii: ",")) }
            appendString(value, to: &out)
        }
        out.append(UInt8(ascii: "]"))
    }
}
