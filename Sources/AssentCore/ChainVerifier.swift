import Foundation

/// The latest event of a contact's chain, as stored beside the events.
public struct ChainHead: Equatable, Sendable {
    public var contactID: UUID
    public var seq: Int64
    public var hash: Data

    public init(contactID: UUID, seq: Int64, hash: Data) {
        self.contactID = contactID
        self.seq = seq
        self.hash = hash
    }

    public static func empty(_ contactID: UUID) -> ChainHead {
        ChainHead(contactID: contactID, seq: 0, hash: ConsentEvent.genesisHash)
    }
}

/// Everything stored about one contact's ledger, as verification reads it.
public struct ChainSnapshot: Sendable {
    public var contactID: UUID
    public var events: [ConsentEvent]
    public var head: ChainHead?
    public var preferences: [Preference]

    public init(contactID: UUID, events: [ConsentEvent], head: ChainHead?, preferences: [Preference]) {
        self.contactID = contactID
        self.events = events
        self.head = head
        self.preferences = preferences
    }
}

/// The first broken link found in one contact's chain.
public struct ChainBreak: Equatable, Sendable, CustomStringConvertible {
    public enum Kind: String, Sendable, Equatable {
        /// An event's content does not match its hash: it was edited.
        case edited
        /// An event does not point at the hash of the one before: one was removed, inserted or reordered.
        case brokenLink = "broken_link"
        /// Sequence numbers skip or repeat: an event was removed or reordered.
        case sequenceGap = "sequence_gap"
        /// The chain does not end where the stored head says: the latest events were removed or added.
        case headMismatch = "head_mismatch"
        /// The projected preferences disagree with a replay of the events.
        case projectionMismatch = "projection_mismatch"
        /// An event names a different contact than the chain it is in.
        case wrongContact = "wrong_contact"
    }

    public var contactID: UUID
    public var seq: Int64?
    public var kind: Kind
    public var detail: String

    public var description: String {
        "contact \(contactID.uuidString.lowercased())" + (seq.map { " event #\($0)" } ?? "") + ": \(kind.rawValue): \(detail)"
    }
}

public enum ChainVerifier {
    /// Recomputes the chain from the first event and returns the first break, or nil when intact.
    public static func verify(_ chain: ChainSnapshot) -> ChainBreak? {
        var expectedPrev = ConsentEvent.genesisHash
        var expectedSeq: Int64 = 1
        for event in chain.events {
            if event.contactID != chain.contactID {
                return ChainBreak(contactID: chain.contactID, seq: event.seq, kind: .wrongContact, detail: "event \(event.id) belongs to \(event.contactID)")
            }
            if event.seq != expectedSeq {
                return ChainBreak(contactID: chain.contactID, seq: event.seq, kind: .sequenceGap, detail: "expected event #\(expectedSeq), found #\(event.seq)")
            }
            if event.prevHash != expectedPrev {
                return ChainBreak(contactID: chain.contactID, seq: event.seq, kind: .brokenLink, detail: "previous-hash does not match the hash of event #\(event.seq - 1)")
            }
            if event.computeHash() != event.hash {
                return ChainBreak(contactID: chain.contactID, seq: event.seq, kind: .edited, detail: "content does not match its hash")
            }
            expectedPrev = event.hash
            expectedSeq += 1
        }
        let lastSeq = expectedSeq - 1
        let head = chain.head ?? .empty(chain.contactID)
        if head.seq != lastSeq || head.hash != expectedPrev {
            return ChainBreak(contactID: chain.contactID, seq: head.seq, kind: .headMismatch,
                              detail: "stored head is event #\(head.seq) but the chain ends at #\(lastSeq)")
        }
        let replayed = Projection.replay(chain.events)
        let stored = Dictionary(chain.preferences.map { ($0.topicKey, $0) }, uniquingKeysWith: { a, _ in a })
        for key in Set(replayed.keys).union(stored.keys).sorted() {
            let r = replayed[key], s = stored[key]
            if r?.state != s?.state || r?.seq != s?.seq || r?.expiresAt != s?.expiresAt || r?.since != s?.since {
                return ChainBreak(contactID: chain.contactID, seq: s?.seq, kind: .projectionMismatch,
                                  detail: "topic '\(key)' reads \(s?.state.rawValue ?? "none") but the events say \(r?.state.rawValue ?? "none")")
            }
        }
        return nil
    }
}
