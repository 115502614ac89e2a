import AssentCore
import Crypto
import Foundation
import Testing

/// The hand-written base64url codec against Foundation's base64, the reference it replaced.
@Suite struct Base64URLTests {
    static func reference(_ data: Data) -> String {
        data.base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    @Test func encodesAsFoundationDoesAndDecodesBack() {
        var generator = SystemRandomNumberGenerator()
        for length in Array(0...70) + [255, 256, 1_000, 4_099] {
            let data = Data((0..<length).map { _ in UInt8.random(in: 0...255, using: &generator) })
            let text = data.base64URL
            #expect(text == Self.reference(data), "length \(length)")
            #expect(Data(base64URL: text) == data, "length \(length)")
        }
        #expect(Data([0xFB, 0xFF]).base64URL == "-_8")
    }

    @Test(arguments: ["A", "AAAAA", "AB==", "AB=", "A B", "ab+c", "ab/c", "ab.c", "é", "AB\u{0}"])
    func refusesWhatNoEncodingWrites(_ text: String) {
        #expect(Data(base64URL: text) == nil)
    }

    @Test func refusesUnusedBitsThatAreSet() {
        // "AA" is one zero byte; "AB" sets a bit the byte does not have, so a second text for the same byte.
        #expect(Data(base64URL: "AA") == Data([0]))
        #expect(Data(base64URL: "AB") == nil)
        #expect(Data(base64URL: "AAA") == Data([0, 0]))
        #expect(Data(base64URL: "AAB") == nil)
        #expect(Data(base64URL: "") == Data())
    }
}

@Suite struct ContactLinkSigningTests {
    @Test func tokenIsPayloadThenTheCutHMAC() {
        let key = SymmetricKey(size: .bits256), secret = Data((0..<32).map { UInt8($0 * 7 & 255) })
        let id = UUID()
        let signer = ContactLink.Signer(key: key)
        for link in [ContactLink(purpose: .preferenceCentre, contactID: id), ContactLink(purpose: .unsubscribe, contactID: id, topicKey: "news"),
                     ContactLink(purpose: .repermission, contactID: id, topicKey: "events")] {
            var payload = Data([link.purpose.rawValue])
            withUnsafeBytes(of: id.uuid) { payload.append(contentsOf: $0) }
            payload.append(contentsOf: (link.topicKey ?? "").utf8)
            let mac = Data(HMAC<SHA256>.authenticationCode(for: payload + Data([0]) + secret, using: key)).prefix(16)
            let expected = (payload + mac).base64URL
            // The signer keyed once gives the same token every time (its state is copied, not shared).
            #expect(link.token(secret: secret, signer: signer) == expected)
            #expect(link.token(secret: secret, signer: signer) == expected)
            #expect(link.token(secret: secret, key: key) == expected)
            let parsed = ContactLink.parse(expected, purpose: link.purpose)
            #expect(parsed?.link == link)
            #expect(parsed.map { $0.link.verify(mac: $0.mac, secret: secret, signer: signer) } == true)
            #expect(parsed.map { $0.link.verify(mac: $0.mac, secret: Data(secret.reversed()), signer: signer) } == false)
        }
    }
}

/// The link signer's HMAC-SHA256 (two kept SHA-256 states) is swift-crypto's `HMAC<SHA256>`, byte for byte.
@Suite struct LinkSignerHMACTests {
    @Test func equalsSwiftCryptosHMACForKeysAndMessagesOfEveryLengthAroundTheBlock() {
        var generator = SystemRandomNumberGenerator()
        func bytes(_ count: Int) -> [UInt8] { (0..<count).map { _ in UInt8.random(in: 0...255, using: &generator) } }
        // Keys shorter than, equal to and longer than SHA-256's 64-byte block (a longer key is hashed first).
        let keyLengths = [0, 1, 16, 31, 32, 33, 63, 64, 65, 100, 128, 200]
        let messageLengths = [0, 1, 17, 54, 55, 56, 63, 64, 65, 119, 120, 128, 1_000]
        var compared = 0
        for keyLength in keyLengths {
            let key = SymmetricKey(data: bytes(keyLength))
            let signer = ContactLink.Signer(key: key)
            for messageLength in messageLengths {
                let message = bytes(messageLength)
                let expected = Data(HMAC<SHA256>.authenticationCode(for: message, using: key))
                let got = message.withUnsafeBytes { Data(signer.authenticationCode(for: $0)) }
                #expect(got == expected, "key \(keyLength) bytes, message \(messageLength) bytes")
                // The same signer again: its kept states were copied, not advanced.
                #expect(message.withUnsafeBytes { Data(signer.authenticationCode(for: $0)) } == expected)
                compared += 1
            }
        }
        #expect(compared == keyLengths.count * messageLengths.count)
    }
}

@Suite struct EmailLowerCasingTests {
    @Test(arguments: ["Ann.Lee@Example.COM", "ZOE+Z@A-B.ORG", "o'BRIEN@x.io", "Jörg.Ä@Bücher.DE", "ΣΟΦΙΑ@παράδειγμα.ΕΛ"])
    func lowerCasesAsStringDoes(_ raw: String) throws {
        let parts = raw.split(separator: "@")
        #expect(try EmailAddress(raw).value == parts[0].lowercased() + "@" + parts[1].lowercased())
    }
}

/// Receipts and the send-time check are written as JSON by hand; the bytes are what JSONEncoder writes.
@Suite struct HandWrittenReceiptJSONTests {
    static let encoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return encoder
    }()

    @Test func stringsAreEscapedAsJSONEncoderEscapesThem() throws {
        var everything = ""
        for i in 0..<0x80 { everything.unicodeScalars.append(Unicode.Scalar(UInt8(i))) }
        everything += "\u{2028}\u{2029}é😀/"
        for text in ["", "plain", everything, "a\"b\\c", "tab\there", "\u{0}"] {
            var out: [UInt8] = []
            JSONBytes.appendString(text, to: &out)
            #expect(String(decoding: out, as: UTF8.self) == String(decoding: try Self.encoder.encode([text]), as: UTF8.self).dropFirst().dropLast())
        }
    }

    @Test func aReceiptIsTheBytesJSONEncoderWrites() throws {
        let contactID = UUID.timeOrdered()
        let issuers = [
            ReceiptIssuer(controller: .init(piiController: "Acme \"Ltd\"", contact: "DPO\nOffice", address: "1 Road/2\\3", email: "dpo@acme.example",
                                            phone: "+44 1\t2", piiControllerUrl: "https://acme.example/privacy"),
                          jurisdiction: "GB", policyURL: "https://acme.example/policy?a=1&b=2"),
            ReceiptIssuer(controller: .init(piiController: "Münch & Söhne", contact: "", address: "", email: "", phone: "", piiControllerUrl: nil),
                          jurisdiction: "DE", policyURL: ""),
        ]
        let topics = [Topic(key: "news", title: "News \u{2028} & more", category: "general", createdAt: Date()),
                      Topic(key: "hr-training", title: "HR", category: "b2b", consentLifetimeDays: 730, createdAt: Date())]
        for (n, (issuer, topic)) in zip(issuers, topics).enumerated() {
            for (action, from, to, notice, channel) in [(ConsentAction.granted, PreferenceState.none, PreferenceState.granted, Optional(3), StaffChannel?.none),
                                                        (.withdrawn, .granted, .withdrawn, nil, .phone)] {
                let event = ConsentEvent(id: UUID.timeOrdered(), contactID: contactID, seq: Int64(n + 7), topicKey: topic.key, action: action,
                                         fromState: from, toState: to, source: channel == nil ? .form : .staff, channel: channel,
                                         actor: Actor(kind: .staff, id: "jo"), occurredAt: Date(timeIntervalSince1970: 1_796_245_049.151), recordedAt: Date(),
                                         expiresAt: nil, noticeVersion: notice, formID: nil, formVersion: nil, batchID: nil, sealedEvidence: nil,
                                         prevHash: ConsentEvent.genesisHash).sealed()
                let contact = Contact(id: contactID, email: try EmailAddress("jörg@example.com"), locale: n == 0 ? nil : "de-AT", createdAt: Date())
                let receipt = ConsentReceipt(event: event, contact: contact, topic: topic, noticeText: "We \"will\" email you.\nUnsubscribe/any time.",
                                             issuer: issuer)
                #expect(String(decoding: receipt.canonicalJSON, as: UTF8.self) == String(decoding: try Self.encoder.encode(receipt), as: UTF8.self))
                var keyed = receipt
                keyed.publicKey = "key/1"
                #expect(String(decoding: keyed.canonicalJSON, as: UTF8.self) == String(decoding: try Self.encoder.encode(keyed), as: UTF8.self))
            }
        }
    }
}
