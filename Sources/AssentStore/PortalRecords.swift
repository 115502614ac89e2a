import AssentCore
import Foundation

/// A single-use sign-in link for the self-service portal, stored by the hash of its secret.
public struct PortalLinkRecord: Sendable, Equatable {
    public var hash: Data
    public var contactID: UUID
    public var createdAt: Date
    public var expiresAt: Date
    public var usedAt: Date?

    public init(hash: Data, contactID: UUID, createdAt: Date, expiresAt: Date, usedAt: Date? = nil) {
        self.hash = hash
        self.contactID = contactID
        self.createdAt = createdAt
        self.expiresAt = expiresAt
        self.usedAt = usedAt
    }
}

/// A signed-in portal visitor, stored by the hash of the cookie's secret, so a
/// copy of the database cannot be used to sign in.
public struct PortalSession: Sendable, Equatable {
    public var hash: Data
    public var contactID: UUID
    public var createdAt: Date
    public var expiresAt: Date

    public init(hash: Data, contactID: UUID, createdAt: Date, expiresAt: Date) {
        self.hash = hash
        self.contactID = contactID
        self.createdAt = createdAt
        self.expiresAt = expiresAt
    }
}

/// A data-subject request for staff to handle (GDPR Art. 15-21), with the
/// date it must be answered by (Art. 12(3): one month).
public struct SubjectRequest: Sendable, Equatable {
    public enum Kind: String, Sendable, Codable, CaseIterable {
        case access
        case erasure
        case objection
        case rectification
    }

    public enum Status: String, Sendable, Codable, CaseIterable {
        case open
        case closed
    }

    public var id: UUID
    public var contactID: UUID
    public var kind: Kind
    public var status: Status
    /// Where it was made: `portal`, `api`, `staff`.
    public var channel: String
    public var note: String?
    public var createdAt: Date
    public var dueAt: Date
    public var closedAt: Date?
    /// How it ended, e.g. `erased`.
    public var outcome: String?
    /// How the person's identity was checked.
    public var identityNote: String?
    /// Why the deadline was extended by two months (Art. 12(3)); nil = not extended.
    public var extensionReason: String?
    /// The staff member handling it (their email).
    public var handler: String?

    public init(id: UUID, contactID: UUID, kind: Kind, status: Status = .open, channel: String, note: String? = nil,
                createdAt: Date, dueAt: Date, closedAt: Date? = nil, outcome: String? = nil) {
        self.outcome = outcome
        self.id = id
        self.contactID = contactID
        self.kind = kind
        self.status = status
        self.channel = channel
        self.note = note
        self.createdAt = createdAt
        self.dueAt = dueAt
        self.closedAt = closedAt
    }

    /// `months` calendar months after `date` (Art. 12(3): one, or three when
    /// extended), in UTC; a day the month lacks becomes its last day (31 Jan -> 28/29 Feb).
    public static func dueDate(after date: Date, months: Int = 1) -> Date {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        return calendar.date(byAdding: .month, value: months, to: date) ?? date.addingTimeInterval(Double(months) * 30 * 86_400)
    }

    public func isOverdue(at now: Date) -> Bool { status == .open && dueAt < now }
}

/// The outbox payload of a portal sign-in email. Sealed; the link's secret is
/// scrubbed once sent.
public struct PortalLinkEmail: Codable, Sendable, Equatable {
    public static let kind = "email.portal_link"
    public var contactID: UUID
    public var to: String
    public var name: String?
    public var locale: String?
    public var token: String
    public var expiresAt: Date

    public init(contactID: UUID, to: String, name: String?, locale: String?, token: String, expiresAt: Date) {
        self.contactID = contactID
        self.to = to
        self.name = name
        self.locale = locale
        self.token = token
        self.expiresAt = expiresAt
    }
}

extension PortalLinkEmail: LinkEmail {}

/// What erasing a contact removes and keeps, applied by the store in one transaction.
public struct ContactErasure: Sendable {
    public var contactID: UUID
    public var at: Date
    /// The keyed hash (HMAC) of the email, kept on the suppression list.
    public var emailHash: Data
    /// The email itself, only to find stored API responses that contain it.
    public var email: String
    public var reason: String
    /// Who erased (a staff email, an API key, the command line).
    public var erasedBy: String
    /// `contact.erased` messages, enqueued with the erasure (the contact's other messages are deleted).
    public var webhooks: [WebhookDelivery] = []

    public init(contactID: UUID, at: Date, emailHash: Data, email: String, reason: String, erasedBy: String) {
        self.contactID = contactID
        self.at = at
        self.emailHash = emailHash
        self.email = email
        self.reason = reason
        self.erasedBy = erasedBy
    }
}

/// An erased person's entry on the suppression list: a keyed hash of their
/// email, so an import or API call cannot silently add them back.
public struct Suppression: Sendable, Equatable {
    public var emailHash: Data
    public var contactID: UUID
    public var erasedAt: Date
    public var reason: String
    public var erasedBy: String

    public init(emailHash: Data, contactID: UUID, erasedAt: Date, reason: String, erasedBy: String) {
        self.emailHash = emailHash
        self.contactID = contactID
        self.erasedAt = erasedAt
        self.reason = reason
        self.erasedBy = erasedBy
    }
}
