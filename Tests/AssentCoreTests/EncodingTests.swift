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

@Suite struct EmailLowerCasingTests {
    @Test(arguments: ["Ann.Lee@Example.COM", "ZOE+Z@A-B.ORG", "o'BRIEN@x.io", "Jörg.Ä@Bücher.DE", "ΣΟΦΙΑ@παράδειγμα.ΕΛ"])
    func lowerCasesAsStringDoes(_ raw: String) throws {
        let parts = raw.split(separator: "@")
        #expect(try EmailAddress(raw).value == parts[0].lowercased() + "@" + parts[1].lowercased())
    }
}
