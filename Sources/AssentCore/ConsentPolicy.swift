import Foundation

/// What a caller asks for on one topic.
public enum ConsentIntent: String, Sendable, Codable, CaseIterable {
    /// Say yes (recorded as `granted`).
    case optIn
    /// Say no (recorded as `withdrawn`).
    case optOut
    /// Ask for a yes that must be confirmed (double opt-in): `pending`.
    case request
    /// Confirm a pending request: `confirmed` -> `granted`.
    case confirm
    /// A grant reached the end of its lifetime (system only).
    case expire
    /// Say yes again from a re-permission link, which proves the inbox: a
    /// fresh `granted` with a new lifetime, even over a live grant.
    case renew

    /// Whether this intent can lead to a grant (or a pending request for one).
    public var canGrant: Bool {
        switch self {
        case .optIn, .request, .confirm, .renew: true
        case .optOut, .expire: false
        }
    }
}

/// The outcome of the state machine for one topic.
public enum ConsentDecision: Equatable, Sendable {
    case change(action: ConsentAction, to: PreferenceState)
    /// Nothing is recorded; the reason says why in words a user understands.
    case unchanged(reason: String)
}

/// The consent state machine: a pure function of the current state, the
/// intent and the topic. It is the only place that decides transitions.
public enum ConsentPolicy {
    public static func decide(current: PreferenceState, intent: ConsentIntent, topic: Topic, field: String = "topic") throws -> ConsentDecision {
        func refuseIfRetired() throws {
            if topic.status == .retired {
                throw DomainError.invalid(field: field, "topic '\(topic.key)' is retired and accepts no new opt-ins")
            }
        }
        switch intent {
        case .optIn:
            try refuseIfRetired()
            return current == .granted ? .unchanged(reason: "already granted") : .change(action: .granted, to: .granted)
        case .request:
            try refuseIfRetired()
            switch current {
            case .granted: return .unchanged(reason: "already granted")
            case .pending: return .unchanged(reason: "already pending confirmation")
            case .none, .withdrawn, .expired: return .change(action: .requested, to: .pending)
            }
        case .confirm:
            try refuseIfRetired()
            switch current {
            case .pending: return .change(action: .confirmed, to: .granted)
            case .granted: return .unchanged(reason: "already granted")
            case .none, .withdrawn, .expired:
                throw DomainError.invalid(field: field, "topic '\(topic.key)' has no pending opt-in to confirm")
            }
        case .optOut:
            // Withdrawal is always possible, even on a retired topic. "No" after
            // "No" (never asked, withdrawn, expired) is not a change.
            switch current {
            case .granted, .pending: return .change(action: .withdrawn, to: .withdrawn)
            case .none: return .unchanged(reason: "not opted in")
            case .withdrawn: return .unchanged(reason: "already withdrawn")
            case .expired: return .unchanged(reason: "already expired")
            }
        case .expire:
            return current == .granted ? .change(action: .expired, to: .expired) : .unchanged(reason: "not granted")
        case .renew:
            try refuseIfRetired()
            return .change(action: .granted, to: .granted)
        }
    }
}
