import AssentCore
import Foundation

/// Work a commit leaves for a worker (an email to send), written in the same
/// transaction as the events that caused it, so a crash can lose neither.
public struct OutboxItem: Sendable, Equatable {
    public enum Status: String, Sendable, CaseIterable {
        /// Waiting for its next attempt.
        case pending
        /// Delivered.
        case sent
        /// Gave up after the last retry; `assent outbox retry` brings it back.
        case dead
    }

    public var id: UUID
    public var contactID: UUID?
    /// What to do, e.g. `email.confirmation`.
    public var kind: String
    /// The work's data, sealed with the master key (it may hold a link that grants consent).
    public var payload: Data
    public var status: Status
    /// Delivery attempts started so far.
    public var attempts: Int
    public var nextAttemptAt: Date
    public var lastError: String?
    public var createdAt: Date
    public var sentAt: Date?

    public init(id: UUID, contactID: UUID?, kind: String, payload: Data, status: Status = .pending, attempts: Int = 0,
                nextAttemptAt: Date, lastError: String? = nil, createdAt: Date, sentAt: Date? = nil) {
        self.id = id
        self.contactID = contactID
        self.kind = kind
        self.payload = payload
        self.status = status
        self.attempts = attempts
        self.nextAttemptAt = nextAttemptAt
        self.lastError = lastError
        self.createdAt = createdAt
        self.sentAt = sentAt
    }
}

/// A double opt-in link's server side. Only the SHA-256 of the token is
/// stored; the token itself exists in the email alone.
public struct ConfirmationToken: Sendable, Equatable {
    public var hash: Data
    public var contactID: UUID
    /// The pending topics the link confirms.
    public var topics: [String]
    /// Those already confirmed through it (a landing page may confirm one by one).
    public var confirmedTopics: [String]
    public var createdAt: Date
    public var expiresAt: Date
    /// Set when a newer request replaced this link.
    public var supersededAt: Date?

    public init(hash: Data, contactID: UUID, topics: [String], confirmedTopics: [String] = [], createdAt: Date, expiresAt: Date,
                supersededAt: Date? = nil) {
        self.hash = hash
        self.contactID = contactID
        self.topics = topics
        self.confirmedTopics = confirmedTopics
        self.createdAt = createdAt
        self.expiresAt = expiresAt
        self.supersededAt = supersededAt
    }

    public var remainingTopics: [String] { topics.filter { !confirmedTopics.contains($0) } }
    public var isUsedUp: Bool { remainingTopics.isEmpty }
}

/// The instance's receipt-signing key, its private half sealed with the master key.
public struct SigningKeyRecord: Sendable, Equatable {
    public var keyID: String
    public var sealedPrivateKey: Data
    public var createdAt: Date

    public init(keyID: String, sealedPrivateKey: Data, createdAt: Date) {
        self.keyID = keyID
        self.sealedPrivateKey = sealedPrivateKey
        self.createdAt = createdAt
    }
}

extension OutboxItem {
    /// How long a claimed item stays invisible to other workers; a worker that
    /// crashes mid-send releases it when this runs out.
    /// Long enough for a whole claimed batch on a slow SMTP server, so that no
    /// other instance sends the same email meanwhile.
    public static let claimLease: TimeInterval = 900

    /// Retry schedule after a failed attempt: 30 s, 2 min, 10 min, 30 min,
    /// 1 h, 2 h, 4 h, 8 h, then dead (about 16 hours in all).
    public static func retryDelay(afterAttempt attempt: Int) -> TimeInterval? {
        let schedule: [TimeInterval] = [30, 120, 600, 1_800, 3_600, 7_200, 14_400, 28_800]
        return attempt >= 1 && attempt <= schedule.count ? schedule[attempt - 1] : nil
    }
}
