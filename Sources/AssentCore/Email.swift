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
        let parts = trimmed.split(separator: "@", omittingEmptySubsequences: false)
        guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else {
            throw DomainError.invalid(field: field, "'\(raw)' is not an email address (expected local@domain)")
        }
        let local = parts[0], domain = parts[1]
        guard local.utf8.count <= 64 else { throw DomainError.invalid(field: field, "local part must be at most 64 bytes") }
        // Byte tables rather than CharacterSet (built from a string on every call, it cost more than the rest
        // of an import row's checks); any byte of a multi-byte character (>= 0x80) is allowed, as before.
        guard local.utf8.allSatisfy({ $0 >= 0x80 || Self.localAllowed[Int($0)] }),
              local.utf8.first != UInt8(ascii: "."), local.utf8.last != UInt8(ascii: "."),
              !zip(local.utf8, local.utf8.dropFirst()).contains(where: { $0 == UInt8(ascii: ".") && $1 == UInt8(ascii: ".") })
        else { throw DomainError.invalid(field: field, "'\(raw)' has characters not allowed before the @") }
        let labels = domain.split(separator: ".", omittingEmptySubsequences: false)
        guard labels.count >= 2,
              labels.allSatisfy({ label in
                  !label.isEmpty && label.count <= 63 && label.utf8.first != UInt8(ascii: "-") && label.utf8.last != UInt8(ascii: "-")
                      && label.utf8.allSatisfy { $0 >= 0x80 || Self.labelAllowed[Int($0)] }
              })
        else { throw DomainError.invalid(field: field, "'\(raw)' does not have a valid domain") }
        if trimmed.utf8.allSatisfy({ $0 < 0x80 }) {
            // ASCII, nearly every address: lower-cased byte by byte (String.lowercased() was a tenth of a batch check).
            self.value = String(decoding: trimmed.utf8.map { $0 >= UInt8(ascii: "A") && $0 <= UInt8(ascii: "Z") ? $0 + 32 : $0 }, as: UTF8.self)
        } else {
            self.value = local.lowercased() + "@" + domain.lowercased()
        }
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
