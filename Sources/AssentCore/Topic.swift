import Foundation

/// An area of interest a person can opt in to ("events", "hr-training").
public struct Topic: Equatable, Sendable, Codable {
    public var key: String
    public var title: String
    public var description: String
    public var category: String
    public var status: Status
    /// Whether an opt-in from a form or portal must be confirmed by email first.
    public var requiresDoubleOptIn: Bool
    /// How long a grant lasts before it expires; nil = until withdrawn.
    public var consentLifetimeDays: Int?
    /// With a lifetime: how many days before a grant expires Assent emails the
    /// person asking them to renew it (re-permission); nil = no such email.
    public var repermissionDaysBefore: Int?
    /// The version of the notice currently shown when asking.
    public var currentNoticeVersion: Int
    public var createdAt: Date
    public var updatedAt: Date

    public enum Status: String, Sendable, Codable, CaseIterable {
        case active
        case retired
    }

    public init(
        key: String, title: String, description: String = "", category: String = "general",
        status: Status = .active, requiresDoubleOptIn: Bool = false, consentLifetimeDays: Int? = nil,
        repermissionDaysBefore: Int? = nil, currentNoticeVersion: Int = 1, createdAt: Date, updatedAt: Date? = nil
    ) {
        self.key = key
        self.title = title
        self.description = description
        self.category = category
        self.status = status
        self.requiresDoubleOptIn = requiresDoubleOptIn
        self.consentLifetimeDays = consentLifetimeDays
        self.repermissionDaysBefore = repermissionDaysBefore
        self.currentNoticeVersion = currentNoticeVersion
        self.createdAt = createdAt
        self.updatedAt = updatedAt ?? createdAt
    }

    public var isActive: Bool { status == .active }

    /// A key is a slug: lower-case letters, digits and single hyphens, starting with a letter.
    public static func validateKey(_ key: String, field: String = "key") throws {
        guard !key.isEmpty else { throw DomainError.invalid(field: field, "is required") }
        // Characters are counted only past the byte limit (a slug's characters are its bytes).
        guard key.utf8.count <= Limits.topicKeyLength || key.count <= Limits.topicKeyLength else {
            throw DomainError.invalid(field: field, "must be at most \(Limits.topicKeyLength) characters")
        }
        // One pass over the bytes (every consent check validates its topic; Foundation's `contains` went through NSString).
        var ok = true, previous: UInt8 = 0, index = 0
        for byte in key.utf8 {
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"): break
            case UInt8(ascii: "0")...UInt8(ascii: "9"): ok = ok && index > 0
            case UInt8(ascii: "-"): ok = ok && index > 0 && previous != UInt8(ascii: "-")
            default: ok = false
            }
            previous = byte
            index += 1
        }
        guard ok, previous != UInt8(ascii: "-") else {
            throw DomainError.invalid(field: field, "'\(key)' must be a slug: lower-case letters, digits and hyphens, starting with a letter (e.g. hr-training)")
        }
    }

    /// Checks every field; throws all problems at once.
    public func validate() throws {
        var problems: [ValidationError] = []
        func collect(_ body: () throws -> Void) {
            do { try body() } catch let DomainError.invalid(errors) { problems += errors } catch {}
        }
        collect { try Topic.validateKey(key) }
        collect {
            if title.trimmingCharacters(in: .whitespaces).isEmpty { throw DomainError.invalid(field: "title", "is required") }
            try TextCheck.check(title, field: "title", max: Limits.titleLength)
        }
        collect { try TextCheck.check(description, field: "description", max: Limits.descriptionLength, allowNewlines: true) }
        collect {
            if category.isEmpty { throw DomainError.invalid(field: "category", "is required") }
            try TextCheck.check(category, field: "category", max: Limits.categoryLength)
        }
        collect {
            if let days = consentLifetimeDays, !(1...36_500).contains(days) {
                throw DomainError.invalid(field: "consentLifetimeDays", "must be between 1 and 36500 days")
            }
        }
        collect {
            guard let before = repermissionDaysBefore else { return }
            guard let days = consentLifetimeDays else {
                throw DomainError.invalid(field: "repermissionDaysBefore", "needs a consentLifetimeDays: only grants that expire are renewed")
            }
            if before < 1 || before >= days {
                throw DomainError.invalid(field: "repermissionDaysBefore", "must be between 1 and \(max(1, days - 1)) days (less than the \(days)-day lifetime)")
            }
        }
        if !problems.isEmpty { throw DomainError.invalid(problems) }
    }
}

/// The exact statement shown to a person when asking for a topic. Versions
/// are immutable: editing the notice appends a new version.
public struct Notice: Equatable, Sendable, Codable {
    public var topicKey: String
    public var version: Int
    public var text: String
    public var createdAt: Date

    public init(topicKey: String, version: Int, text: String, createdAt: Date) {
        self.topicKey = topicKey
        self.version = version
        self.text = text
        self.createdAt = createdAt
    }

    public static func validateText(_ text: String, field: String = "notice") throws {
        if text.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty {
            throw DomainError.invalid(field: field, "is required: the exact statement shown when asking")
        }
        try TextCheck.check(text, field: field, max: Limits.noticeLength, allowNewlines: true)
    }
}
