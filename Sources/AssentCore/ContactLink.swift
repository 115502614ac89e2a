import Crypto
import Foundation

/// A signed, long-lived link for one contact: the preference centre
/// (`/p/{token}`) or one-click unsubscribe (`/u/{token}`). Nothing is stored
/// per link: the token carries its purpose, the contact id and (for
/// unsubscribe) the topic, authenticated by an HMAC over those and the
/// contact's link secret. Rotating that secret revokes every link of the
/// contact at once; a link made for one purpose never works for another.
public struct ContactLink: Equatable, Sendable {
    public enum Purpose: UInt8, Sendable {
        case preferenceCentre = 0x70 // "p"
        case unsubscribe = 0x75 // "u"
        /// Renew an expiring grant of one topic (`/r/{token}`).
        case repermission = 0x72 // "r"

        /// Whether the link names one topic (required for renewal, optional for unsubscribe).
        var carriesTopic: Bool { self != .preferenceCentre }
    }

    public var purpose: Purpose
    public var contactID: UUID
    /// For unsubscribe links: the topic, nil = every topic. For re-permission links: the topic to renew.
    public var topicKey: String?

    public init(purpose: Purpose, contactID: UUID, topicKey: String? = nil) {
        self.purpose = purpose
        self.contactID = contactID
        self.topicKey = purpose.carriesTopic ? topicKey : nil
    }

    /// 128 bits of HMAC-SHA256 are kept: forging one is a 2^128 guess per try.
    static let macLength = 16

    private var payload: [UInt8] {
        var bytes: [UInt8] = [purpose.rawValue]
        bytes.reserveCapacity(17 + (topicKey?.utf8.count ?? 0) + Self.macLength)
        withUnsafeBytes(of: contactID.uuid) { bytes.append(contentsOf: $0) }
        if let topicKey { bytes.append(contentsOf: topicKey.utf8) }
        return bytes
    }

    /// HMAC-SHA256 keyed once: keying pads the key and hashes a block twice, a tenth
    /// of the cost of a link when an audience export makes millions.
    ///
    /// It keeps swift-crypto's two SHA-256 states after the padded key (RFC 2104's
    /// H(K ^ opad || H(K ^ ipad || m)), what `HMAC<SHA256>` does inside), and uses them
    /// as the concrete `SHA256` type: through the generic `HMAC<SHA256>`, unspecialised
    /// outside its module, the wrapper's metadata look-ups and closures cost five times
    /// the hashing itself (perf of an audience export: 20% of its CPU against 3.7% in
    /// SHA-256's blocks). A test holds it equal to `HMAC<SHA256>` for keys and messages
    /// of every length around the block size.
    public struct Signer: Sendable {
        private let inner: SHA256, outer: SHA256

        public init(key: SymmetricKey) {
            let blockSize = SHA256.blockByteCount
            var block = [UInt8](repeating: 0, count: blockSize)
            key.withUnsafeBytes { raw in
                if raw.count > blockSize {
                    SHA256.hash(data: Array(raw)).withUnsafeBytes { digest in for (i, byte) in digest.enumerated() { block[i] = byte } }
                } else {
                    for (i, byte) in raw.enumerated() { block[i] = byte }
                }
            }
            var inner = SHA256(), outer = SHA256()
            inner.update(data: block.map { $0 ^ 0x36 })
            outer.update(data: block.map { $0 ^ 0x5c })
            self.inner = inner
            self.outer = outer
        }

        /// The full HMAC-SHA256 of `message`. The kept states are values: each call copies them.
        public func authenticationCode(for message: UnsafeRawBufferPointer) -> SHA256.Digest {
            var inner = self.inner
            inner.update(bufferPointer: message)
            var outer = self.outer
            inner.finalize().withUnsafeBytes { outer.update(bufferPointer: $0) }
            return outer.finalize()
        }
    }

    /// HMAC(payload || 0x00 || secret), cut to `macLength` bytes.
    private func mac(payload: [UInt8], secret: Data, signer: Signer) -> [UInt8] {
        var message = payload
        message.append(0)
        message.append(contentsOf: secret)
        return message.withUnsafeBytes { Array(signer.authenticationCode(for: $0).prefix(Self.macLength)) }
    }

    /// The URL-safe token for this link under the contact's current secret.
    public func token(secret: Data, signer: Signer) -> String {
        let payload = payload
        return Base64URL.encode(payload + mac(payload: payload, secret: secret, signer: signer))
    }

    /// The same token appended to `out` as text: an audience export writes two per row, and
    /// this one makes no arrays or strings on the way (the payload sits in a fixed buffer).
    public func appendToken(to out: inout [UInt8], secret: Data, signer: Signer) {
        secret.withUnsafeBytes { appendToken(to: &out, secret: $0, signer: signer) }
    }

    /// The same with the secret's bytes where they lie (an export's row read as bytes).
    public func appendToken(to out: inout [UInt8], secret: UnsafeRawBufferPointer, signer: Signer) {
        let topic = topicKey?.utf8
        let payloadCount = 17 + (topic?.count ?? 0)
        // One buffer: payload, then 0x00 and the secret (what is MACed), whose tail the MAC then overwrites.
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: payloadCount + 1 + max(secret.count, Self.macLength)) { buffer in
            buffer[0] = purpose.rawValue
            withUnsafeBytes(of: contactID.uuid) { id in for i in 0..<16 { buffer[1 + i] = id[i] } }
            if let topic { var i = 17; for byte in topic { buffer[i] = byte; i += 1 } }
            buffer[payloadCount] = 0
            for i in 0..<secret.count { buffer[payloadCount + 1 + i] = secret[i] }
            // One update of contiguous bytes: HMAC's generic update walked each piece's regions unspecialised.
            let mac = signer.authenticationCode(for: UnsafeRawBufferPointer(UnsafeMutableBufferPointer(rebasing: buffer[0..<(payloadCount + 1 + secret.count)])))
            mac.withUnsafeBytes { raw in for i in 0..<Self.macLength { buffer[payloadCount + i] = raw[i] } }
            Base64URL.append(UnsafeBufferPointer(rebasing: buffer[0..<(payloadCount + Self.macLength)]), to: &out)
        }
    }

    public func token(secret: Data, key: SymmetricKey) -> String { token(secret: secret, signer: Signer(key: key)) }

    /// Reads a token's claims without checking them; `verify` must follow.
    /// Nil when the text cannot be a token of this purpose.
    public static func parse(_ token: String, purpose: Purpose) -> (link: ContactLink, mac: Data)? {
        guard token.count <= 200, let data = Data(base64URL: token), data.count >= 1 + 16 + macLength,
              data.first == purpose.rawValue else { return nil }
        let bytes = [UInt8](data)
        let uuidBytes = Array(bytes[1..<17])
        let id = UUID(uuid: (uuidBytes[0], uuidBytes[1], uuidBytes[2], uuidBytes[3], uuidBytes[4], uuidBytes[5], uuidBytes[6], uuidBytes[7],
                             uuidBytes[8], uuidBytes[9], uuidBytes[10], uuidBytes[11], uuidBytes[12], uuidBytes[13], uuidBytes[14], uuidBytes[15]))
        let topicBytes = bytes[17..<(bytes.count - macLength)]
        var topic: String?
        if !topicBytes.isEmpty {
            guard purpose.carriesTopic, let text = String(bytes: topicBytes, encoding: .utf8), (try? Topic.validateKey(text)) != nil else { return nil }
            topic = text
        }
        if purpose == .repermission && topic == nil { return nil }
        return (ContactLink(purpose: purpose, contactID: id, topicKey: topic), Data(bytes.suffix(macLength)))
    }

    /// Whether `mac` was made for this link with this secret (constant time).
    public func verify(mac given: Data, secret: Data, signer: Signer) -> Bool {
        given.constantTimeEquals(Data(mac(payload: payload, secret: secret, signer: signer)))
    }

    public func verify(mac given: Data, secret: Data, key: SymmetricKey) -> Bool { verify(mac: given, secret: secret, signer: Signer(key: key)) }
}

extension MasterKey {
    /// A key for one job, derived from the master key (HKDF-SHA256), so that
    /// link signatures and sealed data never share key material.
    public func derivedKey(purpose: String) -> SymmetricKey {
        HKDF<SHA256>.deriveKey(inputKeyMaterial: key, info: Data("assent/\(purpose)".utf8), outputByteCount: 32)
    }
}

extension ContiguousBytes {
    /// Compares secrets without leaking, through timing, where they differ: `Data`, or a digest
    /// where it lies (an API key's, on every request), with no copy.
    public func constantTimeEquals(_ other: some ContiguousBytes) -> Bool {
        withUnsafeBytes { (mine: UnsafeRawBufferPointer) in
            other.withUnsafeBytes { (theirs: UnsafeRawBufferPointer) in
                guard mine.count == theirs.count else { return false }
                var difference: UInt8 = 0
                for i in 0..<mine.count { difference |= mine[i] ^ theirs[i] }
                return difference == 0
            }
        }
    }
}
