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
    public var canonicalBytes: Data { Data(canonicalByteArray) }

    /// The canonical bytes as an array, built with static helpers on an
    /// `inout` buffer: nested functions capturing the buffer made every
    /// append pay a dynamic exclusivity check (a tenth of `assent verify`).
    var canonicalByteArray: [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(384 + (sealedEvidence?.count ?? 0))
        Self.put("assent-event/1", &out)
        Self.put(id.lowercasedUTF8, &out)
        Self.put(contactID.lowercasedUTF8, &out)
        Self.put(String(seq), &out)
        Self.put(topicKey, &out)
        Self.put(action.rawValue, &out)
        Self.put(fromState.rawValue, &out)
        Self.put(toState.rawValue, &out)
        Self.put(source.rawValue, &out)
        Self.put(channel?.rawValue, &out)
        Self.put(actor.kind.rawValue, &out)
        Self.put(actor.id, &out)
        Self.put(String(occurredAt.millisecondsSince1970), &out)
        Self.put(String(recordedAt.millisecondsSince1970), &out)
        Self.put(expiresAt.map { String($0.millisecondsSince1970) }, &out)
        Self.put(noticeVersion.map(String.init), &out)
        Self.put(formID, &out)
        Self.put(formVersion.map(String.init), &out)
        Self.put(batchID, &out)
        if let sealedEvidence { Self.put(sealedEvidence, &out) } else { Self.put(nil as String?, &out) }
        return out
    }

    private static func put(_ bytes: some Collection<UInt8>, _ out: inout [UInt8]) {
        let n = UInt32(bytes.count)
        out.append(UInt8(truncatingIfNeeded: n >> 24))
        out.append(UInt8(truncatingIfNeeded: n >> 16))
        out.append(UInt8(truncatingIfNeeded: n >> 8))
        out.append(UInt8(truncatingIfNeeded: n))
        out.append(contentsOf: bytes)
    }

    private static func put(_ s: String?, _ out: inout [UInt8]) {
        guard let s else {
            out.append(contentsOf: [0xFF, 0xFF, 0xFF, 0xFF] as [UInt8])
            return
        }
        put(s.utf8, &out)
    }

    /// `SHA-256(canonical bytes ‖ previous hash)`.
    public func computeHash() -> Data {
        var hasher = SHA256()
        canonicalByteArray.withUnsafeBytes { hasher.update(bufferPointer: $0) }
        prevHash.withUnsafeBytes { hasher.update(bufferPointer: $0) }
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
    /// Lower-case hexadecimal (by table: `String(format:)` per byte was 5 % of a write request's time).
    public var hexString: String {
        String(unsafeUninitializedCapacity: count * 2) { buffer in
            let digits: StaticString = "0123456789abcdef"
            var i = 0
            for byte in self {
                buffer[i] = digits.utf8Start[Int(byte >> 4)]
                buffer[i + 1] = digits.utf8Start[Int(byte & 0x0F)]
                i += 2
            }
            return i
        }
    }

    public init?(hexString: String) {
        guard hexString.count.isMultiple(of: 2) else { return nil }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(hexString.count / 2)
        var iterator = hexString.utf8.makeIterator()
        while let hi = iterator.next(), let lo = iterator.next() {
            guard let h = HexDigit.value(hi), let l = HexDigit.value(lo) else { return nil }
            bytes.append(h << 4 | l)
        }
        self.init(bytes)
    }
}
