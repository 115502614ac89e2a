import Foundation

/// An email address in the one form Assent stores and compares: trimmed, the
/// domain lower-cased, the local part lower-cased too (nearly every mailbox
/// provider treats it case-insensitively, and two contacts that differ only in
/// case are the same person far more often than not).
public struct EmailAddress: Hashable, Sendable, Codable, CustomStringConvertible {
    public let value: String

    public init(_ raw: String, field: String = "email") throws {
        let trimmed = raw.trimmingCharacters(in: .whitespacesAndNewlines)
        guard !trimmed.isEmpty else { throw DomainError.invalid(field: field, "is required") }
        guard trimmed.utf8.count <= Limits.emailLength else {
            throw DomainError.invalid(field: field, "must be at most \(Limits.emailLength) bytes")
        }
        let parts = trimmed.split(separator: "@", omittingEmptySubsequences: false)
        guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else {
            throw DomainError.invalid(field: field, "'\(raw)' is not an email address (expected local@domain)")
        }
        let local = String(parts[0]), domain = String(parts[1])
        guard local.utf8.count <= 64 else { throw DomainError.invalid(field: field, "local part must be at most 64 bytes") }
        let localAllowed = CharacterSet(charactersIn: "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-/=?^_`{|}~.")
        guard local.unicodeScalars.allSatisfy({ localAllowed.contains($0) || $0.value > 0x7F }),
              !local.hasPrefix("."), !local.hasSuffix("."), !local.contains("..")
        else { throw DomainError.invalid(field: field, "'\(raw)' has characters not allowed before the @") }
        let labels = domain.split(separator: ".", omittingEmptySubsequences: false)
        let labelAllowed = CharacterSet(charactersIn: "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-")
        guard labels.count >= 2,
              labels.allSatisfy({ label in
                  !label.isEmpty && label.count <= 63 && !label.hasPrefix("-") && !label.hasSuffix("-")
                      && label.unicodeScalars.allSatisfy { labelAllowed.contains($0) || $0.value > 0x7F }
              })
        else { throw DomainError.invalid(field: field, "'\(raw)' does not have a valid domain") }
        self.value = local.lowercased() + "@" + domain.lowercased()
    }

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
