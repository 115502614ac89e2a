import Foundation

/// An email address in the one form Assent stores and compares: trimmed, the
/// domain lower-cased, the local part lower-cased too (nearly every mailbox
/// provider treats it case-insensitively, and two contacts that differ only in
/// case are the same person far more often than not).
public struct EmailAddress: Hashable, Sendable, Codable, CustomStringConvertible {
    public let value: String

    public init(_ raw: String, field: String = "email") throws {
        let trimmed = raw.trimmingWhitespace
        guard !trimmed.isEmpty else { throw DomainError.invalid(field: field, "is required") }
        guard trimmed.utf8.count <= Limits.emailLength else {
            throw DomainError.invalid(field: field, "must be at most \(Limits.emailLength) bytes")
        }
        var text = trimmed
        // One pass over the bytes, in the order (and with the messages) of the rules below; the
        // splits, zips and per-label substrings this replaced were 1.8 us of every address of a batch check.
        let verdict = text.withUTF8 { Self.check($0) }
        switch verdict {
        case .notAnAddress: throw DomainError.invalid(field: field, "'\(raw)' is not an email address (expected local@domain)")
        case .localTooLong: throw DomainError.invalid(field: field, "local part must be at most 64 bytes")
        case .badLocal: throw DomainError.invalid(field: field, "'\(raw)' has characters not allowed before the @")
        case .badDomain: throw DomainError.invalid(field: field, "'\(raw)' does not have a valid domain")
        case .ascii:
            // Nearly every address: lower-cased byte by byte (String.lowercased() was a tenth of a batch check).
            self.value = String(unsafeUninitializedCapacity: text.utf8.count) { buffer in
                var i = 0
                for byte in text.utf8 {
                    buffer[i] = byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z") ? byte + 32 : byte
                    i += 1
                }
                return i
            }
        case .unicode:
            let at = text.firstIndex(of: "@")!
            self.value = text[..<at].lowercased() + "@" + text[text.index(after: at)...].lowercased()
        }
    }

    private enum Verdict { case ascii, unicode, notAnAddress, localTooLong, badLocal, badDomain }

    /// The rules, over the address's UTF-8: exactly one @ with text on both sides; a local part
    /// of at most 64 bytes of RFC 5322 atext and single inner dots (any byte of a multi-byte
    /// character allowed); a domain of two or more labels of 1 to 63 characters, letters, digits
    /// and inner hyphens (multi-byte characters allowed).
    private static func check(_ bytes: UnsafeBufferPointer<UInt8>) -> Verdict {
        var at = -1
        for (i, byte) in bytes.enumerated() where byte == UInt8(ascii: "@") {
            if at >= 0 { return .notAnAddress }
            at = i
        }
        guard at > 0, at < bytes.count - 1 else { return .notAnAddress }
        guard at <= 64 else { return .localTooLong }
        let dot = UInt8(ascii: "."), hyphen = UInt8(ascii: "-")
        var ascii = true, previous: UInt8 = 0
        for i in 0..<at {
            let byte = bytes[i]
            if byte >= 0x80 { ascii = false } else if !localAllowed[Int(byte)] { return .badLocal }
            if byte == dot && (i == 0 || previous == dot || i == at - 1) { return .badLocal }
            previous = byte
        }
        var labels = 0, labelStart = at + 1, labelASCII = true
        for i in (at + 1)...bytes.count {
            let byte = i < bytes.count ? bytes[i] : dot
            if byte == dot {
                let length = i - labelStart
                guard length > 0, bytes[labelStart] != hyphen, bytes[i - 1] != hyphen else { return .badDomain }
                if length > 63 {
                    // Characters, not bytes, as before: only a label with multi-byte characters can still pass.
                    guard !labelASCII, String(decoding: UnsafeBufferPointer(rebasing: bytes[labelStart..<i]), as: UTF8.self).count <= 63 else { return .badDomain }
                }
                labels += 1
                labelStart = i + 1
                labelASCII = true
            } else if byte >= 0x80 {
                ascii = false
                labelASCII = false
            } else if !labelAllowed[Int(byte)] {
                return .badDomain
            }
        }
        guard labels >= 2 else { return .badDomain }
        return ascii ? .ascii : .unicode
    }

    /// An address read back from Assent's own store, which holds only addresses
    /// that passed `init(_:field:)`; not checked again (checking was a twentieth
    /// of an audience export).
    public init(stored value: String) {
        self.value = value
    }

    private static func table(_ allowed: String) -> [Bool] {
        var table = [Bool](repeating: false, count: 128)
        for byte in allowed.utf8 { table[Int(byte)] = true }
        return table
    }

    /// ASCII allowed before the @ (RFC 5322 atext and the dot).
    private static let localAllowed = table("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-/=?^_`{|}~.")
    /// ASCII allowed in a domain label.
    private static let labelAllowed = table("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-")

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        try self.init(container.decode(String.self))
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(value)
    }

    public var description: String { value }
}
