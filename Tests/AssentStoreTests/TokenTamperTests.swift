import AssentCore
import AssentStore
import AssentTestSupport
import Crypto
import Foundation
import Testing

/// Every token a person or a system holds, against bit flips (every bit),
/// truncation (every length), expiry, replay and use for the wrong purpose:
/// all refused, on every store.
@Suite struct TokenTamperTests {
    /// Every variant of `token` with one bit of its bytes flipped, and every proper prefix of it.
    static func mutations(ofBase64URL token: String) -> [String] {
        let bytes = [UInt8](Data(base64URL: token)!)
        var out: [String] = []
        for i in bytes.indices {
            for bit in 0..<8 {
                var flipped = bytes
                flipped[i] ^= 1 << bit
                out.append(Data(flipped).base64URL)
            }
        }
        for length in 0..<token.count { out.append(String(token.prefix(length))) }
        return out
    }

    /// For random secrets (stored hashed): every character replaced by another, and every prefix.
    static func mutations(ofText token: String) -> [String] {
        var out: [String] = []
        let characters = Array(token)
        for i in characters.indices {
            var changed = characters
            changed[i] = changed[i] == "A" ? "B" : "A"
            out.append(String(changed))
        }
        for length in 0..<token.count { out.append(String(token.prefix(length))) }
        return out
    }

    @Test(arguments: StoreKind.available)
    func signedContactLinksRefuseEveryFlipTruncationAndOtherPurpose(_ kind: StoreKind) async throws {
        let ledger = try await kind.makeLedger()
        try await seedTopics(ledger)
        let ann = try await ledger.createContact(email: EmailAddress("ann@example.com"), name: nil, externalID: nil, locale: nil)
        let links: [(ContactLink.Purpose, String)] = [
            (.preferenceCentre, try await ledger.linkToken(ContactLink(purpose: .preferenceCentre, contactID: ann.id))),
            (.unsubscribe, try await ledger.linkToken(ContactLink(purpose: .unsubscribe, contactID: ann.id, topicKey: "news"))),
            (.repermission, try await ledger.linkToken(ContactLink(purpose: .repermission, contactID: ann.id, topicKey: "news"))),
        ]
        var tried = 0
        for (purpose, token) in links {
            #expect(try await ledger.resolveLink(token, purpose: purpose)?.contact.id == ann.id)
            for mutated in Self.mutations(ofBase64URL: token) where mutated != token {
                #expect(try await ledger.resolveLink(mutated, purpose: purpose) == nil, "\(purpose) accepted \(mutated)")
                tried += 1
            }
            for other in [ContactLink.Purpose.preferenceCentre, .unsubscribe, .repermission] where other != purpose {
                #expect(try await ledger.resolveLink(token, purpose: other) == nil, "\(purpose) link used as \(other)")
            }
            // Not a confirmation link or a sign-in link either.
            #expect(try await ledger.linkStatus(token: token) == .unknown)
            #expect(try await ledger.signIn(token: token) == nil)
        }
        #expect(tried > 900)
        // Revoked all at once by rotating the contact's secret.
        try await ledger.rotateLinks(contactID: ann.id)
        for (purpose, token) in links { #expect(try await ledger.resolveLink(token, purpose: purpose) == nil) }
    }

    @Test(arguments: StoreKind.available)
    func confirmationLinksRefuseTamperingExpiryReplayAndOtherPurpose(_ kind: StoreKind) async throws {
        let clock = TestClock(Date(timeIntervalSince1970: 1_800_000_000))
        let ledger = try await kind.makeLedger(now: { clock.now })
        _ = try await ledger.createTopic(Topic(key: "news", title: "News", requiresDoubleOptIn: true, createdAt: clock.now), noticeText: "News.")
        let ann = try await ledger.createContact(email: EmailAddress("ann@example.com"), name: nil, externalID: nil, locale: nil)
        func request() async throws -> String {
            _ = try await ledger.recordChange(ChangeRequest(contactID: ann.id, changes: [TopicChange(topicKey: "news", intent: .optIn)],
                                                            source: .form, actor: .subject, evidence: Evidence()))
            let items = try await ledger.store.outboxItems(contactID: ann.id).filter { $0.kind == ConfirmationEmail.kind }
            return try ConfirmationEmail.open(try #require(items.max { $0.createdAt < $1.createdAt }), masterKey: ledger.masterKey).token
        }
        let token = try await request()
        guard case .valid = try await ledger.linkStatus(token: token) else { Issue.record("a fresh link is valid"); return }
        for mutated in Self.mutations(ofText: token) where mutated != token {
            #expect(try await ledger.linkStatus(token: mutated) == .unknown, "accepted \(mutated)")
        }
        // Wrong purpose: not a sign-in link, not a signed contact link.
        #expect(try await ledger.signIn(token: token) == nil)
        #expect(try await ledger.resolveLink(token, purpose: .preferenceCentre) == nil)
        // Replay: it confirms once.
        let (first, result) = try await ledger.confirm(token: token, ipAddress: nil, userAgent: nil)
        guard case .valid = first else { Issue.record("the first use confirms"); return }
        #expect(result?.events.map(\.action) == [.confirmed])
        let (again, nothing) = try await ledger.confirm(token: token, ipAddress: nil, userAgent: nil)
        #expect(again == .used && nothing == nil)
        // Superseded by a newer link, and expired after its lifetime.
        _ = try await ledger.recordChange(ChangeRequest(contactID: ann.id, changes: [TopicChange(topicKey: "news", intent: .optOut)],
                                                        source: .api, actor: .apiKey("k"), evidence: Evidence()))
        let older = try await request()
        clock.now = clock.now.addingTimeInterval(2 * 3_600) // past the resend interval
        let newer = try await request()
        #expect(older != newer)
        #expect(try await ledger.linkStatus(token: older) == .superseded)
        clock.now = clock.now.addingTimeInterval(ledger.confirmationLifetime + 1)
        #expect(try await ledger.linkStatus(token: newer) == .expired)
        let (late, none) = try await ledger.confirm(token: newer, ipAddress: nil, userAgent: nil)
        #expect(late == .expired && none == nil)
        #expect(try await ledger.check(email: ann.email, topicKey: "news").allowed == false)
    }

    @Test(arguments: StoreKind.available)
    func signInLinksRefuseTamperingExpiryReplayAndOtherPurpose(_ kind: StoreKind) async throws {
        let clock = TestClock(Date(timeIntervalSince1970: 1_800_000_000))
        let ledger = try await kind.makeLedger(now: { clock.now })
        let ann = try await ledger.createContact(email: EmailAddress("ann@example.com"), name: nil, externalID: nil, locale: nil)
        func request() async throws -> String {
            try await ledger.requestPortalLink(email: "ann@example.com")
            let items = try await ledger.store.outboxItems(contactID: ann.id).filter { $0.kind == PortalLinkEmail.kind }
            return try PortalLinkEmail.open(try #require(items.max { $0.createdAt < $1.createdAt }), masterKey: ledger.masterKey).token
        }
        let token = try await request()
        for mutated in Self.mutations(ofText: token) where mutated != token {
            #expect(try await ledger.portalLinkState(token: mutated) == .unknown, "accepted \(mutated)")
            #expect(try await ledger.signIn(token: mutated) == nil)
        }
        #expect(try await ledger.linkStatus(token: token) == .unknown, "not a confirmation link")
        #expect(try await ledger.resolveLink(token, purpose: .preferenceCentre) == nil)
        #expect(try await ledger.portalSession(secret: token) == nil, "a sign-in link is not a session")
        let session = try #require(try await ledger.signIn(token: token))
        #expect(try await ledger.signIn(token: token) == nil, "single use")
        #expect(try await ledger.portalSession(secret: session.secret)?.contact.id == ann.id)
        for mutated in Self.mutations(ofText: session.secret) where mutated != session.secret {
            #expect(try await ledger.portalSession(secret: mutated) == nil, "session accepted \(mutated)")
        }
        #expect(!ledger.checkCSRF(ledger.csrfToken(sessionSecret: session.secret), sessionSecret: token), "CSRF tokens belong to one session")
        clock.now = clock.now.addingTimeInterval(2)
        let late = try await request()
        clock.now = clock.now.addingTimeInterval(Ledger.portalLinkLifetime + 1)
        #expect(try await ledger.portalLinkState(token: late) == .expired)
        #expect(try await ledger.signIn(token: late) == nil)
    }

    @Test(arguments: StoreKind.available)
    func receiptsFailVerificationWhenAnyBitChanges(_ kind: StoreKind) async throws {
        let ledger = try await kind.makeLedger()
        try await seedTopics(ledger)
        let ann = try await ledger.createContact(email: EmailAddress("ann@example.com"), name: nil, externalID: nil, locale: nil)
        let event = try #require(try await optIn(ledger, ann, ["news"]).events.first)
        let (_, jws) = try await ledger.receipt(eventID: event.id, issuer: .unconfigured)
        let jwk = try #require(try await ledger.receiptSigners().first?.publicJWK)
        let x = try #require(jwk["x"].flatMap { Data(base64URL: $0) })
        let key = try Curve25519.Signing.PublicKey(rawRepresentation: x)
        func verifies(_ text: String) -> Bool {
            let parts = text.split(separator: ".", omittingEmptySubsequences: false)
            guard parts.count == 3, let signature = Data(base64URL: String(parts[2])) else { return false }
            return key.isValidSignature(signature, for: Data("\(parts[0]).\(parts[1])".utf8))
        }
        #expect(verifies(jws))
        let parts = jws.split(separator: ".").map(String.init)
        var tried = 0
        for (index, part) in parts.enumerated() {
            for mutated in Self.mutations(ofBase64URL: part) where mutated != part {
                var changed = parts
                changed[index] = mutated
                #expect(!verifies(changed.joined(separator: ".")), "part \(index) changed and still verifies")
                tried += 1
            }
        }
        #expect(tried > 2_000)
        // Another deployment's key does not verify it either.
        let other = try await kind.makeLedger().receiptSigners().first!.publicJWK
        let otherX = try #require(other["x"].flatMap { Data(base64URL: $0) })
        let signature = try #require(Data(base64URL: parts[2]))
        #expect(!(try Curve25519.Signing.PublicKey(rawRepresentation: otherX)).isValidSignature(signature, for: Data("\(parts[0]).\(parts[1])".utf8)))
    }

    /// An API key's token as the server reads it (its bytes, split and hashed in place): the token
    /// passes; every changed character, every proper prefix and anything longer fails; ids and
    /// secrets past their lengths, empty or missing parts are not tokens at all. `parse` agrees.
    @Test func apiKeyTokensAreReadByteForByte() throws {
        let (key, token) = APIKey.generate(name: "crm", scope: .read, now: Date())
        func accepted(_ text: String) -> Bool {
            var text = text
            return text.withUTF8 { bytes in APIKey.presented(bytes).map { $0.id == key.id && key.matches(secretDigest: $0.secretDigest) } ?? false }
        }
        #expect(accepted(token))
        let parsed = try #require(APIKey.parse(token: token))
        #expect(parsed.id == key.id && key.matches(secret: parsed.secret))
        let characters = Array(token)
        for i in characters.indices {
            for replacement: Character in ["a", "_", "é", "0"] where replacement != characters[i] {
                var changed = characters
                changed[i] = replacement
                #expect(!accepted(String(changed)), "\(i): \(replacement)")
            }
            #expect(!accepted(String(characters[..<i])), "prefix of \(i)")
        }
        #expect(!accepted(token + "x"))
        for text in ["", "assent_", "assent__secret", "assent_id_", "assent_id", "Assent_id_secret", "assent_\(String(repeating: "a", count: 33))_s",
                     "assent_id_\(String(repeating: "s", count: 129))"] {
            var text = text
            #expect(text.withUTF8 { APIKey.presented($0) } == nil, "\(text)")
            #expect(APIKey.parse(token: text) == nil, "\(text)")
        }
        // At the limits, still a token (of no key).
        var longest = "assent_\(String(repeating: "a", count: 32))_\(String(repeating: "s", count: 128))"
        #expect(longest.withUTF8 { APIKey.presented($0)?.id.count } == 32)
    }
}
