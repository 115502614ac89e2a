import Crypto
import Foundation

/// The per-contact key that seals personal evidence. Deleting it is how a
/// contact's evidence is shredded on erasure: the ciphertext stays in the
/// chain (so the chain still verifies) but can never be read again.
public struct ContactKey: Sendable {
    let key: SymmetricKey

    public init(key: SymmetricKey) { self.key = key }

    public static func generate() -> ContactKey { ContactKey(key: SecureRandom.key()) }

    /// AES-GCM seal bound to the event (its id and contact id are the
    /// authenticated data), so that ciphertext cannot be moved to another event.
    public func seal(_ evidence: PersonalEvidence, eventID: UUID, contactID: UUID) throws -> Data {
        try seal(plaintext: Self.plaintext(evidence), eventID: eventID, contactID: contactID)
    }

    /// The bytes `seal` encrypts: encode them once when one piece of evidence backs several events.
    public static func plaintext(_ evidence: PersonalEvidence) throws -> Data { try JSONEncoder.sorted.encode(evidence) }

    /// `seal` of evidence already encoded by `plaintext`.
    public func seal(plaintext: Data, eventID: UUID, contactID: UUID) throws -> Data {
        let box = try AES.GCM.seal(plaintext, using: key, nonce: SecureRandom.nonce(), authenticating: Self.aad(eventID, contactID))
        guard let combined = box.combined else { throw SealingError.malformed }
        return combined
    }

    public func open(_ sealed: Data, eventID: UUID, contactID: UUID) throws -> PersonalEvidence {
        let box = try AES.GCM.SealedBox(combined: sealed)
        let plaintext = try AES.GCM.open(box, using: key, authenticating: Self.aad(eventID, contactID))
        return try JSONDecoder().decode(PersonalEvidence.self, from: plaintext)
    }

    private static func aad(_ eventID: UUID, _ contactID: UUID) -> Data {
        Data("\(eventID.uuidString.lowercased())/\(contactID.uuidString.lowercased())".utf8)
    }
}

/// Keys, nonces and secrets from the system's generator, each in one request: getrandom on Linux
/// (glibc 2.25 on, looked up at run time: Swift's Glibc module does not declare it), arc4random_buf
/// on Darwin. swift-crypto's `SymmetricKey(size:)` and `AES.GCM.Nonce()` ask 8 bytes at a time (a key
/// was four getrandom calls, a nonce two): an import makes a key and four nonces per contact, and
/// those calls were about 4% of its CPU. Where neither is to be had (a static musl build), Swift's
/// own generator, 8 bytes a call, as before.
public enum SecureRandom {
    /// Fills `buffer` with random bytes.
    public static func fill(_ buffer: UnsafeMutableRawBufferPointer) {
        guard let base = buffer.baseAddress, !buffer.isEmpty else { return }
        var done = 0
        #if canImport(Darwin)
        arc4random_buf(base, buffer.count)
        done = buffer.count
        #elseif canImport(Glibc)
        if let getrandom = getrandomFunction {
            while done < buffer.count {
                let n = getrandom(base + done, buffer.count - done, 0)
                if n > 0 {
                    done += n
                } else if n < 0 && errno == EINTR {
                    continue
                } else {
                    break
                }
            }
        }
        #endif
        guard done < buffer.count else { return }
        var generator = SystemRandomNumberGenerator()
        while done < buffer.count {
            let word = generator.next() as UInt64
            withUnsafeBytes(of: word) { raw in
                let n = min(raw.count, buffer.count - done)
                (base + done).copyMemory(from: raw.baseAddress!, byteCount: n)
                done += n
            }
        }
    }

    #if canImport(Glibc)
    private typealias GetRandom = @convention(c) (UnsafeMutableRawPointer?, Int, UInt32) -> Int
    /// glibc's getrandom(buffer, length, flags), found once in the process's own symbols.
    private static let getrandomFunction: GetRandom? = {
        guard let symbol = dlsym(dlopen(nil, RTLD_NOW), "getrandom") else { return nil }
        return unsafeBitCast(symbol, to: GetRandom.self)
    }()
    #endif

    /// `count` random bytes.
    public static func bytes(_ count: Int) -> Data {
        var data = Data(count: count)
        data.withUnsafeMutableBytes { fill($0) }
        return data
    }

    /// A new 256-bit key; its bytes pass through a buffer cleared afterwards.
    public static func key() -> SymmetricKey {
        withUnsafeTemporaryAllocation(byteCount: 32, alignment: 8) { buffer in
            fill(buffer)
            defer { clear(buffer) }
            return SymmetricKey(data: UnsafeRawBufferPointer(buffer))
        }
    }

    /// Zeroes a buffer about to be freed in a way the optimiser keeps (it may drop plain stores
    /// to memory that is not read again).
    private static func clear(_ buffer: UnsafeMutableRawBufferPointer) {
        guard let base = buffer.baseAddress, !buffer.isEmpty else { return }
        #if canImport(Glibc)
        explicit_bzero(base, buffer.count)
        #elseif canImport(Darwin)
        _ = memset_s(base, buffer.count, 0, buffer.count)
        #else
        buffer.initializeMemory(as: UInt8.self, repeating: 0) // plain stores here (the optimiser may drop them)
        #endif
    }

    /// A new 96-bit AES-GCM nonce (random, as swift-crypto's own).
    public static func nonce() -> AES.GCM.Nonce {
        withUnsafeTemporaryAllocation(byteCount: 12, alignment: 8) { buffer in
            fill(buffer)
            return try! AES.GCM.Nonce(data: UnsafeRawBufferPointer(buffer)) // 12 bytes: never refused
        }
    }
}

public enum SealingError: Error, CustomStringConvertible {
    case malformed
    case badMasterKey(String)

    public var description: String {
        switch self {
        case .malformed: "sealed data is malformed"
        case .badMasterKey(let why): "master key: \(why)"
        }
    }
}

/// The instance's master key. Contact keys are stored wrapped (AES-GCM) by it,
/// so a copy of the database alone does not reveal evidence.
public struct MasterKey: Sendable {
    let key: SymmetricKey

    public init(key: SymmetricKey) { self.key = key }

    public static func generate() -> MasterKey { MasterKey(key: SecureRandom.key()) }

    /// Parses the base64 text form (32 bytes).
    public init(base64: String) throws {
        guard let data = Data(base64Encoded: base64.trimmingCharacters(in: .whitespacesAndNewlines)) else {
            throw SealingError.badMasterKey("is not base64")
        }
        guard data.count == 32 else { throw SealingError.badMasterKey("must be 32 bytes, got \(data.count)") }
        self.key = SymmetricKey(data: data)
    }

    public var base64: String { key.withUnsafeBytes { Data($0).base64EncodedString() } }

    /// Seals any bytes (an outbox payload) bound to `context`, e.g. the item's id.
    public func seal(_ data: Data, context: UUID) throws -> Data {
        let box = try AES.GCM.seal(data, using: key, nonce: SecureRandom.nonce(), authenticating: Data(context.uuidString.lowercased().utf8))
        guard let combined = box.combined else { throw SealingError.malformed }
        return combined
    }

    public func open(_ sealed: Data, context: UUID) throws -> Data {
        try AES.GCM.open(AES.GCM.SealedBox(combined: sealed), using: key, authenticating: Data(context.uuidString.lowercased().utf8))
    }

    public func wrap(_ contactKey: ContactKey, contactID: UUID) throws -> Data {
        let raw = contactKey.key.withUnsafeBytes { Data($0) }
        let box = try AES.GCM.seal(raw, using: key, nonce: SecureRandom.nonce(), authenticating: Data(contactID.uuidString.lowercased().utf8))
        guard let combined = box.combined else { throw SealingError.malformed }
        return combined
    }

    public func unwrap(_ wrapped: Data, contactID: UUID) throws -> ContactKey {
        let box = try AES.GCM.SealedBox(combined: wrapped)
        let raw = try AES.GCM.open(box, using: key, authenticating: Data(contactID.uuidString.lowercased().utf8))
        return ContactKey(key: SymmetricKey(data: raw))
    }
}

extension JSONEncoder {
    static let sorted: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return encoder
    }()
}
