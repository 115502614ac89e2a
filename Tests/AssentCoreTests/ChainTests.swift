import AssentCore
import Crypto
import Foundation
import Testing

/// Builds a valid chain of `count` events for one contact.
func makeChain(count: Int, contactID: UUID = UUID()) -> [ConsentEvent] {
    var prev = ConsentEvent.genesisHash
    var state = PreferenceState.none
    var events: [ConsentEvent] = []
    for i in 1...count {
        let to: PreferenceState = state == .granted ? .withdrawn : .granted
        let event = ConsentEvent(
            id: UUID(), contactID: contactID, seq: Int64(i), topicKey: "events", action: to == .granted ? .granted : .withdrawn,
            fromState: state, toState: to, source: .api, channel: nil, actor: .apiKey("k1"),
            occurredAt: Date(millisecondsSince1970: 1_700_000_000_000 + Int64(i)), recordedAt: Date(millisecondsSince1970: 1_700_000_000_000 + Int64(i)),
            expiresAt: nil, noticeVersion: 1, formID: nil, formVersion: nil, batchID: nil, sealedEvidence: nil, prevHash: prev
        ).sealed()
        prev = event.hash
        state = to
        events.append(event)
    }
    return events
}

func snapshot(_ events: [ConsentEvent]) -> ChainSnapshot {
    let id = events.first!.contactID
    let last = events.last!
    return ChainSnapshot(contactID: id, events: events, head: ChainHead(contactID: id, seq: last.seq, hash: last.hash),
                         preferences: Array(Projection.replay(events).values))
}

@Suite struct ChainTests {
    @Test func intactChainVerifies() {
        #expect(ChainVerifier.verify(snapshot(makeChain(count: 5))) == nil)
    }

    @Test func everyFieldIsCoveredByTheHash() {
        let base = makeChain(count: 1)[0]
        var variants: [ConsentEvent] = []
        func vary(_ edit: (inout ConsentEvent) -> Void) {
            var e = base
            edit(&e)
            variants.append(e)
        }
        vary { $0.id = UUID() }
        vary { $0.contactID = UUID() }
        vary { $0.seq = 2 }
        vary { $0.topicKey = "news" }
        vary { $0.action = .confirmed }
        vary { $0.fromState = .pending }
        vary { $0.toState = .withdrawn }
        vary { $0.source = .staff }
        vary { $0.channel = .phone }
        vary { $0.actor = .staff("k1") }
        vary { $0.actor = .apiKey("k2") }
        vary { $0.occurredAt = $0.occurredAt.addingTimeInterval(0.001) }
        vary { $0.recordedAt = $0.recordedAt.addingTimeInterval(0.001) }
        vary { $0.expiresAt = Date(millisecondsSince1970: 1) }
        vary { $0.noticeVersion = 2 }
        vary { $0.noticeVersion = nil }
        vary { $0.formID = "f" }
        vary { $0.formVersion = 1 }
        vary { $0.batchID = "b" }
        vary { $0.sealedEvidence = Data([1]) }
        vary { $0.prevHash = Data(repeating: 1, count: 32) }
        let hashes = Set(variants.map { $0.computeHash() })
        #expect(hashes.count == variants.count)
        #expect(!hashes.contains(base.hash))
    }

    @Test func absentAndEmptyValuesHashDifferently() {
        var a = makeChain(count: 1)[0]
        var b = a
        a.formID = nil
        b.formID = ""
        #expect(a.computeHash() != b.computeHash())
    }

    @Test func editedEventIsNamed() {
        var events = makeChain(count: 4)
        events[2].topicKey = "news"
        let problem = ChainVerifier.verify(snapshot(events))
        #expect(problem?.kind == .edited)
        #expect(problem?.seq == 3)
    }

    @Test func removedEventIsNamed() {
        var events = makeChain(count: 4)
        events.remove(at: 1)
        let problem = ChainVerifier.verify(snapshot(events))
        #expect(problem?.kind == .sequenceGap)
        #expect(problem?.seq == 3)
    }

    @Test func reorderedEventsAreNamed() {
        var events = makeChain(count: 4)
        events.swapAt(1, 2)
        (events[1].seq, events[2].seq) = (events[2].seq, events[1].seq)
        let problem = ChainVerifier.verify(snapshot(events))
        #expect(problem?.kind == .brokenLink || problem?.kind == .edited)
        #expect(problem?.seq == 2)
    }

    @Test func truncatedTailIsCaughtByTheHead() {
        let events = makeChain(count: 4)
        var snap = snapshot(events)
        snap.events.removeLast()
        snap.preferences = Array(Projection.replay(snap.events).values)
        #expect(ChainVerifier.verify(snap)?.kind == .headMismatch)
    }

    @Test func projectionThatDisagreesWithReplayIsCaught() {
        var snap = snapshot(makeChain(count: 3))
        snap.preferences[0].state = .withdrawn == snap.preferences[0].state ? .granted : .withdrawn
        #expect(ChainVerifier.verify(snap)?.kind == .projectionMismatch)
    }
}

@Suite struct SealingTests {
    @Test func evidenceRoundTripsAndIsBoundToItsEvent() throws {
        let key = ContactKey.generate()
        let evidence = PersonalEvidence(ipAddress: "203.0.113.7", userAgent: "Mozilla/5.0", note: "Said yes at the stand")
        let eventID = UUID(), contactID = UUID()
        let sealed = try key.seal(evidence, eventID: eventID, contactID: contactID)
        #expect(!String(decoding: sealed, as: UTF8.self).contains("203.0.113.7"))
        #expect(try key.open(sealed, eventID: eventID, contactID: contactID) == evidence)
        #expect(throws: (any Error).self) { try key.open(sealed, eventID: UUID(), contactID: contactID) }
        #expect(throws: (any Error).self) { try ContactKey.generate().open(sealed, eventID: eventID, contactID: contactID) }
    }

    @Test func evidenceEncodedOnceSealsSeparatelyPerEvent() throws {
        let key = ContactKey.generate()
        let evidence = PersonalEvidence(note: "One import, many events")
        let plaintext = try ContactKey.plaintext(evidence)
        let contactID = UUID(), first = UUID(), second = UUID()
        let a = try key.seal(plaintext: plaintext, eventID: first, contactID: contactID)
        let b = try key.seal(plaintext: plaintext, eventID: second, contactID: contactID)
        #expect(a != b) // a fresh nonce and its own event bound in
        #expect(try key.open(a, eventID: first, contactID: contactID) == evidence)
        #expect(try key.open(b, eventID: second, contactID: contactID) == evidence)
        #expect(throws: (any Error).self) { try key.open(a, eventID: second, contactID: contactID) }
    }

    /// Keys, nonces and secrets are fresh each time: the same evidence sealed twice for the same
    /// event differs from its first byte (the nonce, which AES-GCM must never repeat under a key).
    @Test func keysNoncesAndSecretsAreFreshEachTime() throws {
        let key = ContactKey.generate(), master = MasterKey.generate()
        let plaintext = try ContactKey.plaintext(PersonalEvidence(note: "same")), eventID = UUID(), contactID = UUID()
        var nonces = Set<Data>(), keys = Set<Data>(), secrets = Set<Data>()
        for _ in 0..<500 {
            nonces.insert(try key.seal(plaintext: plaintext, eventID: eventID, contactID: contactID).prefix(12))
            nonces.insert(try master.seal(plaintext, context: eventID).prefix(12))
            keys.insert(SecureRandom.key().withUnsafeBytes { Data($0) })
            secrets.insert(SecureRandom.bytes(32))
        }
        #expect(nonces.count == 1_000 && keys.count == 500 && secrets.count == 500)
        #expect(!keys.contains(Data(count: 32)) && !secrets.contains(Data(count: 32)))
        #expect(Set((0..<500).map { _ in UUID.random() }).count == 500)
    }

    @Test func masterKeyWrapsContactKeys() throws {
        let master = MasterKey.generate()
        let contactID = UUID()
        let wrapped = try master.wrap(.generate(), contactID: contactID)
        _ = try master.unwrap(wrapped, contactID: contactID)
        #expect(throws: (any Error).self) { try MasterKey.generate().unwrap(wrapped, contactID: contactID) }
        #expect(throws: (any Error).self) { try master.unwrap(wrapped, contactID: UUID()) }
        #expect(try MasterKey(base64: master.base64).base64 == master.base64)
        #expect(throws: (any Error).self) { try MasterKey(base64: "c2hvcnQ=") }
    }
}

@Suite struct EvidenceTests {
    @Test func staffEntriesNeedAChannelAndANote() {
        #expect(throws: DomainError.self) { try Evidence().validate(source: .staff, channel: .phone) }
        #expect(throws: DomainError.self) { try Evidence(personal: .init(note: "yes please")).validate(source: .staff, channel: nil) }
        #expect(throws: Never.self) { try Evidence(personal: .init(note: "yes please")).validate(source: .staff, channel: .phone) }
    }

    @Test(arguments: ["203.0.113.7", "::1", "2001:db8::8a2e:370:7334", "::ffff:192.0.2.1", "fe80::1"])
    func acceptsIPAddresses(_ ip: String) throws {
        try Evidence(personal: .init(ipAddress: ip)).validate(source: .form, channel: nil)
    }

    @Test(arguments: ["256.1.1.1", "1.2.3", "abc", "1:2:3:4:5:6:7:8:9", "1::2::3", "<script>", "' OR 1=1 --"])
    func rejectsNonAddresses(_ ip: String) {
        #expect(throws: DomainError.self) { try Evidence(personal: .init(ipAddress: ip)).validate(source: .form, channel: nil) }
    }
}

@Suite struct CanonicalFormTests {
    /// The hashed form is fixed forever for format 1 (stored chains depend on
    /// it): checked against an independent encoding of the documented layout
    /// and against fixed hashes, so that any change to it fails here.
    @Test func theCanonicalFormIsTheDocumentedLayout() {
        let full = ConsentEvent(
            id: UUID(uuidString: "0F8FAD5B-D9CB-469F-A165-70867728950E")!, contactID: UUID(uuidString: "7C9E6679-7425-40DE-944B-E07FC1F90AE7")!,
            seq: 12, topicKey: "events", action: .granted, fromState: .pending, toState: .granted, source: .staff, channel: .phone,
            actor: .apiKey("k1"), occurredAt: Date(millisecondsSince1970: 1_700_000_000_123), recordedAt: Date(millisecondsSince1970: 1_700_000_000_456),
            expiresAt: Date(millisecondsSince1970: 1_800_000_000_000), noticeVersion: 3, formID: "signup", formVersion: 2, batchID: "b-1",
            sealedEvidence: Data([1, 2, 3, 0xFF]), prevHash: Data(repeating: 7, count: 32))
        let sparse = ConsentEvent(
            id: full.id, contactID: full.contactID, seq: 1, topicKey: "news", action: .withdrawn, fromState: .none, toState: .withdrawn,
            source: .api, channel: nil, actor: .apiKey("k1"), occurredAt: full.occurredAt, recordedAt: full.recordedAt, expiresAt: nil,
            noticeVersion: nil, formID: nil, formVersion: nil, batchID: nil, sealedEvidence: nil, prevHash: ConsentEvent.genesisHash)
        for event in [full, sparse] {
            var expected = Data()
            func field(_ bytes: [UInt8]?) {
                guard let bytes else { return expected.append(contentsOf: [0xFF, 0xFF, 0xFF, 0xFF]) }
                var n = UInt32(bytes.count).bigEndian
                expected.append(Data(bytes: &n, count: 4))
                expected.append(contentsOf: bytes)
            }
            func text(_ s: String?) { field(s.map { Array($0.utf8) }) }
            text("assent-event/1"); text(event.id.uuidString.lowercased()); text(event.contactID.uuidString.lowercased()); text(String(event.seq))
            text(event.topicKey); text(event.action.rawValue); text(event.fromState.rawValue); text(event.toState.rawValue)
            text(event.source.rawValue); text(event.channel?.rawValue); text(event.actor.kind.rawValue); text(event.actor.id)
            text(String(event.occurredAt.millisecondsSince1970)); text(String(event.recordedAt.millisecondsSince1970))
            text(event.expiresAt.map { String($0.millisecondsSince1970) }); text(event.noticeVersion.map(String.init)); text(event.formID)
            text(event.formVersion.map(String.init)); text(event.batchID); field(event.sealedEvidence.map { Array($0) })
            #expect(event.canonicalBytes == expected)
            #expect(event.computeHash() == Data(SHA256.hash(data: expected + event.prevHash)))
        }
        #expect(full.computeHash().hexString == "1ff48e404aa6702cb0f8fc899d8498c57ae79d9152bcb51417a0bf4ed0c5d76c")
        #expect(sparse.computeHash().hexString == "1b71001ec4403a3c701e405c484441da3a13e3d5cf80362c0dfd4c3469bf3248")
    }
}

@Suite struct ReceiptSignerTests {
    /// A JWS is `header.payload.signature` (base64url), the signature Ed25519 over `header.payload`;
    /// a remembered signature gives exactly the string signing again would.
    @Test func signedWithOrWithoutTheMemoTheJWSIsTheSameAndVerifies() throws {
        let (keyID, raw) = ReceiptSigner.generate()
        let signer = try ReceiptSigner(keyID: keyID, rawPrivateKey: raw)
        let memo = SignatureMemo()
        for payload in [Data(#"{"a":1}"#.utf8), Data((0..<1_001).map { UInt8($0 % 251) }), Data()] {
            let plain = try signer.sign(payload)
            let first = try signer.sign(payload, memo: memo)
            let remembered = try signer.sign(payload, memo: memo)
            #expect(plain == first && first == remembered)
            let parts = plain.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
            #expect(parts.count == 3)
            #expect(Data(base64URL: parts[1]) == payload)
            let header = try #require(Data(base64URL: parts[0]))
            #expect(try JSONSerialization.jsonObject(with: header) as? [String: String] == ["alg": "Ed25519", "typ": "JWT", "kid": keyID])
            let publicKey = try Curve25519.Signing.PrivateKey(rawRepresentation: raw).publicKey
            let signature = try #require(Data(base64URL: parts[2]))
            #expect(publicKey.isValidSignature(signature, for: Data((parts[0] + "." + parts[1]).utf8)))
            #expect(!publicKey.isValidSignature(signature, for: Data((parts[0] + "." + parts[1] + "x").utf8)))
        }
        let other = try ReceiptSigner(keyID: "other", rawPrivateKey: raw)
        #expect(try other.sign(Data("x".utf8), memo: memo) == other.sign(Data("x".utf8)))
    }

    /// A remembered token is used only for the very same receipt and key: change any part and it is signed afresh.
    @Test func aRememberedTokenIsOnlyEverTheSameReceiptsOwn() throws {
        let (keyID, raw) = ReceiptSigner.generate()
        let signer = try ReceiptSigner(keyID: keyID, rawPrivateKey: raw)
        let other = try ReceiptSigner(keyID: "other", rawPrivateKey: raw)
        let tokens = ReceiptTokenMemo(limit: 3), signatures = SignatureMemo()
        let contact = Contact(id: UUID.timeOrdered(), email: try EmailAddress("ann@example.com"), createdAt: Date(timeIntervalSince1970: 1_790_000_000))
        let topic = Topic(key: "news", title: "News", createdAt: contact.createdAt)
        var event = ConsentEvent(id: UUID.timeOrdered(), contactID: contact.id, seq: 1, topicKey: "news", action: .granted, fromState: .none, toState: .granted,
                                 source: .api, channel: nil, actor: Actor(kind: .apiKey, id: "k"), occurredAt: contact.createdAt, recordedAt: contact.createdAt,
                                 expiresAt: nil, noticeVersion: 1, formID: nil, formVersion: nil, batchID: nil, sealedEvidence: nil, prevHash: Data(count: 32))
        event.hash = event.computeHash()
        let plain = ReceiptIssuer(controller: .init(piiController: "Assent", contact: "Assent", address: "", email: "no-reply@assent.localhost", phone: "",
                                                    piiControllerUrl: nil), jurisdiction: "EU", policyURL: "about:blank")
        let base = ConsentReceipt(event: event, contact: contact, topic: topic, noticeText: "About news.", issuer: plain)
        var variants = [base]
        variants.append(ConsentReceipt(event: event, contact: contact, topic: topic, noticeText: "About news!", issuer: plain))
        var renamed = contact
        renamed.email = try EmailAddress("ann@example.org")
        variants.append(ConsentReceipt(event: event, contact: renamed, topic: topic, noticeText: "About news.", issuer: plain))
        var retitled = topic
        retitled.title = "Newsletter"
        variants.append(ConsentReceipt(event: event, contact: contact, topic: retitled, noticeText: "About news.", issuer: plain))
        var issuer = plain
        issuer.policyURL = "https://example.com/privacy"
        variants.append(ConsentReceipt(event: event, contact: contact, topic: topic, noticeText: "About news.", issuer: issuer))
        #expect(Set(variants).count == variants.count)
        for _ in 0..<2 { // the second round reads remembered tokens (and, past the limit, signs again)
            for receipt in variants {
                #expect(try signer.sign(receipt, tokens: tokens, signatures: signatures) == signer.sign(receipt.canonicalJSON))
                #expect(try other.sign(receipt, tokens: tokens, signatures: signatures) == other.sign(receipt.canonicalJSON))
            }
        }
        #expect(tokens.count <= 3)
    }
}
