import Foundation

/// A data subject. Creating one grants nothing: every topic reads "No".
public struct Contact: Equatable, Sendable, Codable {
    public var id: UUID
    public var email: EmailAddress
    public var name: String?
    public var externalID: String?
    public var locale: String?
    public var createdAt: Date
    public var updatedAt: Date
    /// Set once the person's data was erased: the email is then a placeholder
    /// and only the non-personal skeleton of their events remains.
    public var erasedAt: Date?
    /// Set when the person objected to all direct marketing (GDPR Art. 21):
    /// nobody but the person may opt them in again.
    public var objectedAt: Date?

    public init(
        id: UUID, email: EmailAddress, name: String? = nil, externalID: String? = nil,
        locale: String? = nil, createdAt: Date, updatedAt: Date? = nil, erasedAt: Date? = nil, objectedAt: Date? = nil
    ) {
        self.erasedAt = erasedAt
        self.objectedAt = objectedAt
        self.id = id
        self.email = email
        self.name = name
        self.externalID = externalID
        self.locale = locale
        self.createdAt = createdAt
        self.updatedAt = updatedAt ?? createdAt
    }

    public var isErased: Bool { erasedAt != nil }

    /// What an erased contact's email reads as (the stored one is gone).
    public static func erasedPlaceholder(_ id: UUID) -> EmailAddress {
        // swiftlint:disable:next force_try
        try! EmailAddress("erased-\(id.uuidString.lowercased().prefix(8))@erased.invalid")
    }

    public func validate() throws {
        var problems: [ValidationError] = []
        if let name {
            do { try TextCheck.check(name, field: "name", max: Limits.nameLength) } catch let DomainError.invalid(e) { problems += e }
        }
        if let externalID {
            if externalID.isEmpty { problems.append(.init(field: "externalId", "must not be empty when given")) }
            do { try TextCheck.check(externalID, field: "externalId", max: Limits.externalIDLength) } catch let DomainError.invalid(e) { problems += e }
        }
        if let locale {
            // BCP 47 shape: letters, digits and hyphens (en, en-GB, pt-BR, zh-Hant-TW).
            let ok = !locale.isEmpty && locale.count <= Limits.localeLength
                && locale.split(separator: "-", omittingEmptySubsequences: false).allSatisfy {
                    !$0.isEmpty && $0.count <= 8 && $0.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber) }
                }
            if !ok { problems.append(.init(field: "locale", "'\(locale)' is not a language tag such as en or en-GB")) }
        }
        if !problems.isEmpty { throw DomainError.invalid(problems) }
    }
}
