import AssentCore
import Crypto
import Foundation

/// What an API key may do. Each scope includes the ones below it.
public enum APIScope: String, Sendable, Codable, CaseIterable, Comparable {
    case read
    case write
    case admin

    private var rank: Int {
        switch self {
        case .read: 0
        case .write: 1
        case .admin: 2
        }
    }

    public static func < (a: APIScope, b: APIScope) -> Bool { a.rank < b.rank }
}

/// A bearer key. Only a SHA-256 hash of the secret is stored: the secret is
/// 32 random bytes, so a slow hash would add nothing but latency.
public struct APIKey: Equatable, Sendable {
    public var id: String
    public var name: String
    public var scope: APIScope
    public var secretHash: Data
    public var createdAt: Date
    public var revokedAt: Date?

    public init(id: String, name: String, scope: APIScope, secretHash: Data, createdAt: Date, revokedAt: Date? = nil) {
        self.id = id
        self.name = name
        self.scope = scope
        self.secretHash = secretHash
        self.createdAt = createdAt
        self.revokedAt = revokedAt
    }

    public var isActive: Bool { revokedAt == nil }

    /// A new key and the token to hand out once: `assent_<id>_<secret>`.
    public static func generate(name: String, scope: APIScope, now: Date) -> (key: APIKey, token: String) {
        // The id is hex so that it never contains the "_" that separates it from the secret.
        let id = randomHex(bytes: 6)
        let secret = randomToken(bytes: 32)
        let key = APIKey(id: id, name: name, scope: scope, secretHash: hash(secret: secret), createdAt: now)
        return (key, "assent_\(id)_\(secret)")
    }

    /// Splits a token into its id and secret; nil when it is not one of ours.
    public static func parse(token: String) -> (id: String, secret: String)? {
        var token = token
        return token.withUTF8 { bytes in
            split(bytes).map { (text(bytes[$0.id]), text(bytes[$0.secret])) }
        }
    }

    /// A presented token's key id and the SHA-256 of its secret (what `matches(secretDigest:)` compares),
    /// read where the token's bytes lie: every API request presents one, and splitting it as Characters
    /// into two Strings, then hashing a copy, was about as much CPU as a consent check's database read.
    public static func presented(_ token: UnsafeBufferPointer<UInt8>) -> (id: String, secretDigest: SHA256.Digest)? {
        split(token).map { (text(token[$0.id]), SHA256.hash(data: UnsafeRawBufferPointer(UnsafeBufferPointer(rebasing: token[$0.secret])))) }
    }

    /// Where the id and the secret of `assent_<id>_<secret>` lie; nil when it is not one of ours.
    private static func split(_ token: UnsafeBufferPointer<UInt8>) -> (id: Range<Int>, secret: Range<Int>)? {
        let prefix = "assent_".utf8.count
        guard token.count > prefix, token.prefix(prefix).elementsEqual("assent_".utf8),
              let separator = token[prefix...].firstIndex(of: UInt8(ascii: "_")) else { return nil }
        let id = prefix..<separator, secret = separator + 1..<token.count
        guard !id.isEmpty, !secret.isEmpty, id.count <= 32, secret.count <= 128 else { return nil }
        return (id, secret)
    }

    private static func text(_ bytes: Slice<UnsafeBufferPointer<UInt8>>) -> String {
        String(decoding: UnsafeBufferPointer(rebasing: bytes), as: UTF8.self)
    }

    public static func hash(secret: String) -> Data { Data(SHA256.hash(data: Data(secret.utf8))) }

    /// Constant-time comparison of the presented secret with the stored hash.
    public func matches(secret: String) -> Bool {
        var secret = secret
        return matches(secretDigest: secret.withUTF8 { SHA256.hash(data: UnsafeRawBufferPointer($0)) })
    }

    /// The same for a secret already hashed (`presented`).
    public func matches(secretDigest: SHA256.Digest) -> Bool { secretDigest.constantTimeEquals(secretHash) }

    public static func validateName(_ name: String) throws {
        if name.trimmingCharacters(in: .whitespaces).isEmpty { throw DomainError.invalid(field: "name", "is required") }
        try TextCheck.check(name, field: "name", max: 100)
    }
}

/// Random URL-safe text (base64url, unpadded) from the system's secure generator.
public func randomToken(bytes count: Int) -> String { SecureRandom.bytes(count).base64URL }

/// Random lower-case hex text from the system's secure generator.
public func randomHex(bytes count: Int) -> String { SecureRandom.bytes(count).map { String(format: "%02x", $0) }.joined() }
