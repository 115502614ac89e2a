import Crypto
import Foundation

/// A consent receipt with the fields of the Kantara Initiative Consent
/// Receipt Specification v1.1, plus the ledger event it proves (`assentEvent`).
public struct ConsentReceipt: Codable, Sendable, Hashable {
    public struct Controller: Codable, Sendable, Hashable {
        public var piiController: String
        public var contact: String
        public var address: String
        public var email: String
        public var phone: String
        public var piiControllerUrl: String?

        public init(piiController: String, contact: String, address: String, email: String, phone: String, piiControllerUrl: String?) {
            self.piiController = piiController
            self.contact = contact
            self.address = address
            self.email = email
            self.phone = phone
            self.piiControllerUrl = piiControllerUrl
        }
    }

    public struct Purpose: Codable, Sendable, Hashable {
        public var purpose: String
        public var purposeCategory: [String]
        public var consentType: String
        public var piiCategory: [String]
        public var primaryPurpose: Bool
        public var termination: String
        public var thirdPartyDisclosure: Bool
    }

    public struct Service: Codable, Sendable, Hashable {
        public var service: String
        public var purposes: [Purpose]
    }

    /// What happened in the ledger, so a receipt can be checked against it.
    public struct EventReference: Codable, Sendable, Hashable {
        public var topic: String
        public var action: String
        public var fromState: String
        public var toState: String
        public var noticeVersion: Int?
        public var seq: Int64
        public var hash: String
    }

    public var version: String
    public var jurisdiction: String
    public var consentTimestamp: Int64
    public var collectionMethod: String
    public var consentReceiptID: String
    public var publicKey: String?
    public var language: String
    public var piiPrincipalId: String
    public var piiControllers: [Controller]
    public var policyUrl: String
    public var services: [Service]
    public var sensitive: Bool
    public var spiCat: [String]
    public var assentEvent: EventReference

    public static let specVersion = "KI-CR-v1.1.0"
}

/// Who the organisation is, as receipts name it.
public struct ReceiptIssuer: Sendable, Equatable {
    public var controller: ConsentReceipt.Controller
    public var jurisdiction: String
    public var policyURL: String

    public init(controller: ConsentReceipt.Controller, jurisdiction: String, policyURL: String) {
        self.controller = controller
        self.jurisdiction = jurisdiction
        self.policyURL = policyURL
    }
}

extension ConsentReceipt {
    /// The receipt for one event: a grant, confirmation or withdrawal.
    public init(event: ConsentEvent, contact: Contact, topic: Topic, noticeText: String, issuer: ReceiptIssuer) {
        let granted = event.toState == .granted
        let termination: String = if !granted { "withdrawn" }
            else if let days = topic.consentLifetimeDays { "expires after \(days) days unless renewed; withdraw at any time" }
            else { "until withdrawn" }
        self.init(
            version: Self.specVersion, jurisdiction: issuer.jurisdiction, consentTimestamp: event.occurredAt.millisecondsSince1970 / 1000,
            collectionMethod: event.source.rawValue + (event.channel.map { "/" + $0.rawValue } ?? ""),
            consentReceiptID: event.id.lowercasedString, publicKey: nil, language: contact.locale ?? "en",
            piiPrincipalId: contact.email.value, piiControllers: [issuer.controller], policyUrl: issuer.policyURL,
            services: [Service(service: topic.title, purposes: [Purpose(
                purpose: noticeText, purposeCategory: [topic.category], consentType: "EXPLICIT", piiCategory: ["email address"],
                primaryPurpose: true, termination: termination, thirdPartyDisclosure: false)])],
            sensitive: false, spiCat: [],
            assentEvent: EventReference(topic: topic.key, action: event.action.rawValue, fromState: event.fromState.rawValue,
                                        toState: event.toState.rawValue, noticeVersion: event.noticeVersion, seq: event.seq,
                                        hash: event.hash.hexString))
    }
}

extension ConsentReceipt {
    /// The signed payload: what `JSONEncoder` with sorted keys and unescaped slashes writes for
    /// this receipt (nil optionals left out), written directly. An access export signs one receipt
    /// per event, and JSONEncoder was a third of its time; a test holds the two equal.
    public var canonicalJSON: Data {
        var out = [UInt8]()
        out.reserveCapacity(1_024)
        func key(_ name: StaticString) { JSONBytes.appendKey(name, to: &out) }
        func comma() { out.append(UInt8(ascii: ",")) }
        func text(_ value: String) { JSONBytes.appendString(value, to: &out) }
        out.append(UInt8(ascii: "{"))
        key("assentEvent")
        out.append(UInt8(ascii: "{"))
        key("action"); text(assentEvent.action); comma()
        key("fromState"); text(assentEvent.fromState); comma()
        key("hash"); text(assentEvent.hash); comma()
        if let version = assentEvent.noticeVersion { key("noticeVersion"); JSONBytes.appendInteger(version, to: &out); comma() }
        key("seq"); JSONBytes.appendInteger(assentEvent.seq, to: &out); comma()
        key("toState"); text(assentEvent.toState); comma()
        key("topic"); text(assentEvent.topic)
        out.append(UInt8(ascii: "}")); comma()
        key("collectionMethod"); text(collectionMethod); comma()
        key("consentReceiptID"); text(consentReceiptID); comma()
        key("consentTimestamp"); JSONBytes.appendInteger(consentTimestamp, to: &out); comma()
        key("jurisdiction"); text(jurisdiction); comma()
        key("language"); text(language); comma()
        key("piiControllers")
        out.append(UInt8(ascii: "["))
        for (i, c) in piiControllers.enumerated() {
            if i > 0 { comma() }
            out.append(UInt8(ascii: "{"))
            key("address"); text(c.address); comma()
            key("contact"); text(c.contact); comma()
            key("email"); text(c.email); comma()
            key("phone"); text(c.phone); comma()
            key("piiController"); text(c.piiController)
            if let url = c.piiControllerUrl { comma(); key("piiControllerUrl"); text(url) }
            out.append(UInt8(ascii: "}"))
        }
        out.append(UInt8(ascii: "]")); comma()
        key("piiPrincipalId"); text(piiPrincipalId); comma()
        key("policyUrl"); text(policyUrl); comma()
        if let publicKey { key("publicKey"); text(publicKey); comma() }
        key("sensitive"); JSONBytes.appendBool(sensitive, to: &out); comma()
        key("services")
        out.append(UInt8(ascii: "["))
        for (i, service) in services.enumerated() {
            if i > 0 { comma() }
            out.append(UInt8(ascii: "{"))
            key("purposes")
            out.append(UInt8(ascii: "["))
            for (j, p) in service.purposes.enumerated() {
                if j > 0 { comma() }
                out.append(UInt8(ascii: "{"))
                key("consentType"); text(p.consentType); comma()
                key("piiCategory"); JSONBytes.appendStrings(p.piiCategory, to: &out); comma()
                key("primaryPurpose"); JSONBytes.appendBool(p.primaryPurpose, to: &out); comma()
                key("purpose"); text(p.purpose); comma()
                key("purposeCategory"); JSONBytes.appendStrings(p.purposeCategory, to: &out); comma()
                key("termination"); text(p.termination); comma()
                key("thirdPartyDisclosure"); JSONBytes.appendBool(p.thirdPartyDisclosure, to: &out)
                out.append(UInt8(ascii: "}"))
            }
            out.append(UInt8(ascii: "]")); comma()
            key("service"); text(service.service)
            out.append(UInt8(ascii: "}"))
        }
        out.append(UInt8(ascii: "]")); comma()
        key("spiCat"); JSONBytes.appendStrings(spiCat, to: &out); comma()
        key("version"); text(version)
        out.append(UInt8(ascii: "}"))
        return Data(out)
    }
}

/// The instance's Ed25519 signing key and compact JWS (RFC 7515). The
/// algorithm is named `Ed25519`, the fully-specified name of RFC 9864, which
/// deprecates the polymorphic `EdDSA` of RFC 8037.
public struct ReceiptSigner: Sendable {
    public let keyID: String
    let key: Curve25519.Signing.PrivateKey

    /// The protected header, the same for every receipt, encoded once (encoding it
    /// on each signature was a fifth of an access export's time).
    let encodedHeader: String

    public init(keyID: String, rawPrivateKey: Data) throws {
        self.keyID = keyID
        self.key = try Curve25519.Signing.PrivateKey(rawRepresentation: rawPrivateKey)
        self.encodedHeader = try JSONSerialization.data(withJSONObject: ["alg": "Ed25519", "typ": "JWT", "kid": keyID], options: [.sortedKeys]).base64URL
    }

    public static func generate() -> (keyID: String, rawPrivateKey: Data) {
        let key = Curve25519.Signing.PrivateKey()
        let raw = key.publicKey.rawRepresentation
        // RFC 7638-style thumbprint as the key id: stable and unique per key.
        let thumbprint = Data(SHA256.hash(data: Data("{\"crv\":\"Ed25519\",\"kty\":\"OKP\",\"x\":\"\(raw.base64URL)\"}".utf8))).base64URL
        return (thumbprint, key.rawRepresentation)
    }

    /// The public key as a JWK (for `/.well-known/jwks.json`).
    public var publicJWK: [String: String] {
        ["kty": "OKP", "crv": "Ed25519", "x": key.publicKey.rawRepresentation.base64URL, "kid": keyID, "alg": "Ed25519", "use": "sig"]
    }

    /// `BASE64URL(header).BASE64URL(payload).BASE64URL(signature)`. With a memo, a payload
    /// signed before is not signed again: Ed25519 signatures are deterministic (RFC 8032), so
    /// the remembered one is exactly the one signing would make.
    public func sign(_ payload: Data, memo: SignatureMemo? = nil) throws -> String {
        // Built as bytes in one buffer: an export signs (or looks up) a thousand of these, and the
        // string concatenations had copied each kilobyte four times.
        var jws = [UInt8]()
        jws.reserveCapacity(encodedHeader.utf8.count + payload.count * 4 / 3 + 96)
        jws.append(contentsOf: encodedHeader.utf8)
        jws.append(UInt8(ascii: "."))
        payload.withUnsafeBytes { Base64URL.append($0.bindMemory(to: UInt8.self), to: &jws) }
        var digest: Data?
        if memo != nil { // SHA-256 of keyID, "\n", header.payload
            var hasher = SHA256()
            hasher.update(data: Data((keyID + "\n").utf8))
            jws.withUnsafeBytes { hasher.update(bufferPointer: $0) }
            digest = Data(hasher.finalize())
        }
        let signature: String
        if let memo, let digest, let known = memo.value(digest) {
            signature = known
        } else {
            signature = Data(try key.signature(for: Data(jws))).base64URL
            if let memo, let digest { memo.remember(digest, signature) }
        }
        jws.append(UInt8(ascii: "."))
        jws.append(contentsOf: signature.utf8)
        return String(decoding: jws, as: UTF8.self)
    }
}

extension ReceiptSigner {
    /// The receipt's JWS, as `sign(receipt.canonicalJSON, memo: signatures)` makes it; with
    /// `tokens`, a receipt signed before by this key is not written, encoded and hashed again
    /// (that was a fifth of an access export with every signature remembered). The receipt
    /// itself is the key, compared whole, so a remembered token is exactly the one signing
    /// would make: any field that differs is a different receipt.
    public func sign(_ receipt: ConsentReceipt, tokens: ReceiptTokenMemo? = nil, signatures: SignatureMemo? = nil) throws -> String {
        guard let tokens else { return try sign(receipt.canonicalJSON, memo: signatures) }
        let key = ReceiptTokenKey(keyID: keyID, receipt: receipt)
        if let known = tokens.value(key) { return known }
        let token = try sign(receipt.canonicalJSON, memo: signatures)
        tokens.remember(key, token)
        return token
    }
}

/// What a receipt token is remembered by: the signing key and the whole receipt.
public struct ReceiptTokenKey: Hashable, Sendable {
    let keyID: String
    let receipt: ConsentReceipt
}

/// Whole receipt tokens (JWS) made before, by signing key and receipt. About 2 KB an entry, so
/// fewer are kept than signatures; `SignatureMemo` behind it keeps the signatures longer.
public typealias ReceiptTokenMemo = BoundedMemo<ReceiptTokenKey, String>

/// Signatures made before, by the SHA-256 of the key id and what was signed. Signing a receipt
/// (Ed25519) was a fifth of an access export; a person's receipts are the same every time their
/// data is exported, so they are signed once per process.
public typealias SignatureMemo = BoundedMemo<Data, String>

extension BoundedMemo where Key == ReceiptTokenKey, Value == String {
    public convenience init() { self.init(limit: 10_000) }
}

extension BoundedMemo where Key == Data, Value == String {
    public convenience init() { self.init(limit: 50_000) }
}

/// Values remembered across threads, bounded: emptied when full.
public final class BoundedMemo<Key: Hashable, Value>: @unchecked Sendable {
    private let lock = NSLock()
    private var values: [Key: Value] = [:]
    public let limit: Int

    public init(limit: Int) { self.limit = limit }

    func value(_ key: Key) -> Value? { lock.withLock { values[key] } }

    func remember(_ key: Key, _ value: Value) {
        lock.withLock {
            if values.count >= limit { values.removeAll(keepingCapacity: true) }
            values[key] = value
        }
    }

    public var count: Int { lock.withLock { values.count } }
}

