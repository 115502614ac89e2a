import Foundation

/// A rule of the domain was broken by an input. `field` names the input
/// (a JSON path such as `preferences[2].topic`, or a CLI flag) so that every
/// caller can tell the user exactly what to fix.
public struct ValidationError: Error, Equatable, Sendable, CustomStringConvertible {
    public var field: String
    public var message: String

    public init(field: String, _ message: String) {
        self.field = field
        self.message = message
    }

    public var description: String { "\(field): \(message)" }
}

/// Errors the domain reports about state rather than shape of input.
public enum DomainError: Error, Equatable, Sendable, CustomStringConvertible {
    case invalid([ValidationError])
    case notFound(what: String, id: String)
    case conflict(field: String, message: String)
    /// It existed but is no longer available (a retired form).
    case gone(what: String, id: String)
    /// The same contact changed under us too many times in a row.
    case contention(contactID: UUID)

    public static func invalid(field: String, _ message: String) -> DomainError {
        .invalid([ValidationError(field: field, message)])
    }

    public var description: String {
        switch self {
        case .invalid(let errors): errors.map(\.description).joined(separator: "; ")
        case .notFound(let what, let id): "\(what) '\(id)' not found"
        case .conflict(let field, let message): "\(field): \(message)"
        case .gone(let what, let id): "\(what) '\(id)' is no longer available"
        case .contention(let id): "contact \(id) is being changed concurrently; try again"
        }
    }
}

/// Text limits shared by every entry point, so an API and a CLI reject the same things.
public enum Limits {
    public static let emailLength = 254
    public static let nameLength = 200
    public static let externalIDLength = 200
    public static let topicKeyLength = 64
    public static let titleLength = 200
    public static let descriptionLength = 2_000
    public static let noticeLength = 20_000
    public static let noteLength = 4_000
    public static let userAgentLength = 1_000
    public static let formIDLength = 200
    public static let categoryLength = 64
    public static let localeLength = 35
    public static let urlLength = 2_000
    public static let topicsPerForm = 100
    public static let originsPerForm = 50
}

public enum TextCheck {
    /// Rejects control characters (NUL included) except tab and newlines, and over-long text.
    public static func check(_ value: String, field: String, max: Int, allowNewlines: Bool = false) throws {
        if value.count > max {
            throw DomainError.invalid(field: field, "must be at most \(max) characters")
        }
        for scalar in value.unicodeScalars {
            let v = scalar.value
            let isNewline = v == 0x0A || v == 0x0D || v == 0x09
            if (v < 0x20 || v == 0x7F) && !(allowNewlines && isNewline) {
                throw DomainError.invalid(field: field, "must not contain control characters")
            }
        }
    }
}
