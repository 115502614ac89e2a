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
        guard token.hasPrefix("assent_") else { return nil }
        let rest = token.dropFirst("assent_".count)
        guard let sep = rest.firstIndex(of: "_") else { return nil }
        let id = String(rest[..<sep]), secret = String(rest[rest.index(after: sep)...])
        guard !id.isEmpty, !secret.isEmpty, id.count <= 32, secret.count <= 128 else { return nil }
        return (id, secret)
    }

    public static func hash(secret: String) -> Data { Data(SHA256.hash(data: Data(secret.utf8))) }

    /// Constant-time comparison of the presented secret with the stored hash. Hashed where the
    /// secret's bytes lie and compared in place (every API request asks).
    public func matches(secret: String) -> Bool {
        var secret = secret
        let digest: SHA256.Digest = secret.withUTF8 { SHA256.hash(data: UnsafeRawBufferPointer($0)) }
        return digest.constantTimeEquals(secretHash)
    }

    public static func validateName(_ name: String) throws {
        if name.trimmingCharacters(in: .whitespaces).isEmpty { throw DomainError.invalid(field: "name", "is required") }
        try TextCheck.check(name, field: "name", max: 100)
    }
}

/// Random URL-safe text from the system's secure generator.
public func randomToken(bytes count: Int) -> String {
    var generator = SystemRandomNumberGenerator()
    let bytes = (0..<count).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
    return Data(bytes).base64EncodedString()
        .replacingOccurrences(of: "+", with: "-")
        .replacingOccurrences(of: "/", with: "_")
        .replacingOccurrences(of: "=", with: "")
}

/// Random lower-case hex text from the system's secure generator.
public func randomHex(bytes count: Int) -> String {
    var generator = SystemRandomNumberGenerator()
    return (0..<count).map { _ in String(format: "%02x", UInt8.random(in: .min ... .max, using: &generator)) }.joined()
}
