import Crypto
import Foundation

/// The "GDPR activity": one immutable, attributed, hash-chained record of a
/// change to one contact's preference for one topic.
public struct ConsentEvent: Equatable, Sendable {
    public var id: UUID
    public var contactID: UUID
    /// 1, 2, 3, ... per contact, without gaps.
    public var seq: Int64
    public var topicKey: String
    public var action: ConsentAction
    public var fromState: PreferenceState
    public var toState: PreferenceState
    public var source: ConsentSource
    public var channel: StaffChannel?
    public var actor: Actor
    /// When the person said it (a verbal instruction may be keyed in later).
    public var occurredAt: Date
    /// The server clock when the event was written.
    public var recordedAt: Date
    /// For grants of a topic with a consent lifetime: when the grant lapses.
    public var expiresAt: Date?
    public var noticeVersion: Int?
    public var formID: String?
    public var formVersion: Int?
    /// Groups events of one import or batch.
    public var batchID: String?
    /// AES-GCM sealed `PersonalEvidence` (IP, user agent, note); nil when none was given.
    public var sealedEvidence: Data?
    public var prevHash: Data
    public var hash: Data

    public init(
        id: UUID, contactID: UUID, seq: Int64, topicKey: String, action: ConsentAction,
        fromState: PreferenceState, toState: PreferenceState, source: ConsentSource, channel: StaffChannel?,
        actor: Actor, occurredAt: Date, recordedAt: Date, expiresAt: Date?, noticeVersion: Int?,
        formID: String?, formVersion: Int?, batchID: String?, sealedEvidence: Data?, prevHash: Data, hash: Data = Data()
    ) {
        self.id = id
        self.contactID = contactID
        self.seq = seq
        self.topicKey = topicKey
        self.action = action
        self.fromState = fromState
        self.toState = toState
        self.source = source
        self.channel = channel
        self.actor = actor
        self.occurredAt = occurredAt
        self.recordedAt = recordedAt
        self.expiresAt = expiresAt
        self.noticeVersion = noticeVersion
        self.formID = formID
        self.formVersion = formVersion
        self.batchID = batchID
        self.sealedEvidence = sealedEvidence
        self.prevHash = prevHash
        self.hash = hash
    }

    /// The hash that precedes the first event of every chain.
    public static let genesisHash = Data(repeating: 0, count: 32)

    /// Deterministic bytes of every field but `hash` and `prevHash`: a format
    /// tag, then each field as a 4-byte big-endian length and its UTF-8 bytes
    /// (length 0xFFFFFFFF for an absent value). Field order is fixed forever
    /// for format 1; a new field means a new format tag.
    public var canonicalBytes: Data {
        var out = Data()
        out.reserveCapacity(384 + (sealedEvidence?.count ?? 0))
        func put(_ bytes: some Collection<UInt8>) {
            var n = UInt32(bytes.count).bigEndian
            withUnsafeBytes(of: &n) { out.append(contentsOf: $0) }
            out.append(contentsOf: bytes)
        }
        func put(_ s: String?) {
            guard let s else {
                out.append(contentsOf: [0xFF, 0xFF, 0xFF, 0xFF])
                return
            }
            put(Array(s.utf8))
        }
        put("assent-event/1")
        put(id.lowercasedUTF8)
        put(contactID.lowercasedUTF8)
        put(String(seq))
        put(topicKey)
        put(action.rawValue)
        put(fromState.rawValue)
        put(toState.rawValue)
        put(source.rawValue)
        put(channel?.rawValue)
        put(actor.kind.rawValue)
        put(actor.id)
        put(String(occurredAt.millisecondsSince1970))
        put(String(recordedAt.millisecondsSince1970))
        put(expiresAt.map { String($0.millisecondsSince1970) })
        put(noticeVersion.map(String.init))
        put(formID)
        put(formVersion.map(String.init))
        put(batchID)
        if let sealedEvidence { put(sealedEvidence) } else { put(nil as String?) }
        return out
    }

    /// `SHA-256(canonical bytes ‖ previous hash)`.
    public func computeHash() -> Data {
        var hasher = SHA256()
        hasher.update(data: canonicalBytes)
        hasher.update(data: prevHash)
        return Data(hasher.finalize())
    }

    /// Returns this event with `hash` computed.
    public func sealed() -> ConsentEvent {
        var copy = self
        copy.hash = computeHash()
        return copy
    }
}

extension Date {
    /// Milliseconds since 1970 (to the nearest, so that `Date(millisecondsSince1970:)` round-trips
    /// exactly despite binary floating point), the resolution Assent stores and hashes.
    public var millisecondsSince1970: Int64 {
        Int64((timeIntervalSince1970 * 1000).rounded())
    }

    public init(millisecondsSince1970 ms: Int64) {
        self.init(timeIntervalSince1970: TimeInterval(ms) / 1000)
    }

    /// This date truncated to whole milliseconds, so that it survives a store round trip exactly.
    /// Cut (never rounded up) to whole milliseconds, so "now" is never in the
    /// future: a worker asking for work due "now" right after a commit finds it.
    /// The small epsilon keeps a value that already is whole milliseconds unchanged.
    public var truncatedToMilliseconds: Date {
        Date(millisecondsSince1970: Int64((timeIntervalSince1970 * 1000 + 1e-6).rounded(.down)))
    }
}

extension Data {
    public var hexString: String { map { String(format: "%02x", $0) }.joined() }

    public init?(hexString: String) {
        guard hexString.count.isMultiple(of: 2) else { return nil }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(hexString.count / 2)
        var iterator = hexString.utf8.makeIterator()
        while let hi = iterator.next(), let lo = iterator.next() {
            guard let h = Self.nibble(hi), let l = Self.nibble(lo) else { return nil }
            bytes.append(h << 4 | l)
        }
        self.init(bytes)
    }

    private static func nibble(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}
