import Foundation

/// Base64url without padding (RFC 4648 section 5), straight from byte tables.
/// Foundation's route (base64 text, then three `replacingOccurrences`) cost
/// half of an audience export, which writes two signed links per row.
enum Base64URL {
    static let alphabet: StaticString = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

    static func encode<Bytes: Collection<UInt8>>(_ bytes: Bytes) -> String {
        bytes.withContiguousStorageIfAvailable(encode) ?? Array(bytes).withUnsafeBufferPointer(encode)
    }

    static func encode(_ bytes: UnsafeBufferPointer<UInt8>) -> String {
        String(unsafeUninitializedCapacity: encodedCount(bytes.count)) { out in write(bytes, into: out) }
    }

    /// The same text appended to `out`, with no String made.
    static func append(_ bytes: UnsafeBufferPointer<UInt8>, to out: inout [UInt8]) {
        let start = out.count
        out.append(contentsOf: repeatElement(0, count: encodedCount(bytes.count)))
        out.withUnsafeMutableBufferPointer { buffer in _ = write(bytes, into: UnsafeMutableBufferPointer(rebasing: buffer[start...])) }
    }

    static func encodedCount(_ n: Int) -> Int { n / 3 * 4 + [0, 2, 3][n % 3] }

    /// Writes the text of `bytes` at the start of `out` (at least `encodedCount` long); returns its length.
    private static func write(_ bytes: UnsafeBufferPointer<UInt8>, into out: UnsafeMutableBufferPointer<UInt8>) -> Int {
        let n = bytes.count, whole = n / 3 * 3
        let table = alphabet.utf8Start
        var i = 0, j = 0
        while j < whole {
            let word = UInt32(bytes[j]) << 16 | UInt32(bytes[j + 1]) << 8 | UInt32(bytes[j + 2])
            out[i] = table[Int(word >> 18 & 63)]
            out[i + 1] = table[Int(word >> 12 & 63)]
            out[i + 2] = table[Int(word >> 6 & 63)]
            out[i + 3] = table[Int(word & 63)]
            i += 4
            j += 3
        }
        if n > whole {
            let word = UInt32(bytes[j]) << 16 | (n - whole == 2 ? UInt32(bytes[j + 1]) << 8 : 0)
            out[i] = table[Int(word >> 18 & 63)]
            out[i + 1] = table[Int(word >> 12 & 63)]
            i += 2
            if n - whole == 2 { out[i] = table[Int(word >> 6 & 63)]; i += 1 }
        }
        return i
    }

    static func value(_ c: UInt8) -> UInt32? {
        switch c {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"): UInt32(c - UInt8(ascii: "A"))
        case UInt8(ascii: "a")...UInt8(ascii: "z"): UInt32(c - UInt8(ascii: "a") + 26)
        case UInt8(ascii: "0")...UInt8(ascii: "9"): UInt32(c - UInt8(ascii: "0") + 52)
        case UInt8(ascii: "-"): 62
        case UInt8(ascii: "_"): 63
        default: nil
        }
    }

    /// Nil for any character outside the alphabet, padding, a length no encoding
    /// has (4k + 1), or unused low bits that are not zero (so each byte string
    /// has exactly one text).
    static func decode(_ text: some StringProtocol) -> [UInt8]? {
        let utf8 = Array(text.utf8)
        guard utf8.count % 4 != 1 else { return nil }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(utf8.count * 3 / 4)
        var start = 0
        while start < utf8.count {
            let end = min(start + 4, utf8.count)
            var word: UInt32 = 0
            for j in start..<end {
                guard let v = value(utf8[j]) else { return nil }
                word = word << 6 | v
            }
            switch end - start {
            case 4:
                bytes += [UInt8(word >> 16 & 255), UInt8(word >> 8 & 255), UInt8(word & 255)]
            case 3:
                guard word & 3 == 0 else { return nil }
                bytes += [UInt8(word >> 10 & 255), UInt8(word >> 2 & 255)]
            default:
                guard word & 15 == 0 else { return nil }
                bytes.append(UInt8(word >> 4 & 255))
            }
            start = end
        }
        return bytes
    }
}

extension Data {
    /// Base64url without padding (RFC 4648 section 5).
    public var base64URL: String { Base64URL.encode(self) }

    /// Decodes base64url without padding (RFC 4648 section 5); nil for anything else.
    public init?(base64URL text: String) {
        guard let bytes = Base64URL.decode(text) else { return nil }
        self.init(bytes)
    }
}
