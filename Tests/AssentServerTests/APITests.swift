import AssentCore
import AssentPostgres
@testable import AssentServer
import AssentStore
import AssentTestSupport
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Testing

@Suite struct SeedScenarioTests {
    /// The article's scenario end to end: topics, a contact, a form opt-in, a
    /// verbal opt-in keyed in by staff with a note, a withdrawal, the timeline, the check.
    @Test(arguments: StoreKind.available)
    func formVerbalAndWithdrawalAreAllOnTheTimeline(_ backend: Backend) async throws {
        try await withAPI(backend) { api in
            try await api.createTopic("events")
            try await api.createTopic("residential-property", category: "property")
            let id = try await api.createContact("Jo.Bloggs@Example.com", externalId: "crm-0042")

            let form = try await api.send(.put, "/api/v1/contacts/\(id)/preferences", json: [
                "source": "form",
                "evidence": ["formId": "newsletter-signup", "formVersion": 3, "ip": "203.0.113.9", "userAgent": "Mozilla/5.0"],
                "preferences": [["topic": "events", "granted": true]],
            ])
            #expect(form.status == .ok, "\(form.text)")
            #expect((form.json["recorded"] as? [[String: Any]])?.count == 1)

            let verbal = try await api.send(.put, "/api/v1/contacts/\(id)/preferences", json: [
                "source": "staff", "channel": "phone", "occurredAt": "2026-11-20T14:30:00Z",
                "evidence": ["note": "Caller asked to hear about residential property; read script v2"],
                "preferences": [["topic": "residential-property", "granted": true]],
            ])
            #expect(verbal.status == .ok, "\(verbal.text)")

            let withdrawal = try await api.send(.put, "/api/v1/contacts/\(id)/preferences", json: [
                "source": "api", "preferences": [["topic": "events", "granted": false]],
            ])
            #expect((withdrawal.json["recorded"] as? [[String: Any]])?.first?["action"] as? String == "withdrawn")

            let timeline = try await api.send(.get, "/api/v1/contacts/\(id)/timeline")
            let events = timeline.items
            #expect(events.map { $0["seq"] as? Int } == [3, 2, 1])
            #expect(events.map { $0["source"] as? String } == ["api", "staff", "form"])
            let staff = events[1]
            #expect(staff["channel"] as? String == "phone")
            #expect(staff["occurredAt"] as? String == "2026-11-20T14:30:00.000Z")
            #expect((staff["evidence"] as? [String: Any])?["note"] as? String == "Caller asked to hear about residential property; read script v2")
            #expect((events[2]["evidence"] as? [String: Any])?["ip"] as? String == "203.0.113.9")
            #expect((events[2]["evidence"] as? [String: Any])?["formId"] as? String == "newsletter-signup")
            #expect((events[2]["actor"] as? [String: Any])?["kind"] as? String == "api_key")
            #expect(events[2]["noticeVersion"] as? Int == 1)
            #expect(events[1]["prevHash"] as? String == events[2]["hash"] as? String)

            let events1 = try await api.send(.get, "/api/v1/check?email=jo.bloggs%40example.com&topic=events")
            #expect(events1.json["allowed"] as? Bool == false)
            #expect(events1.json["reason"] as? String == "withdrawn")
            let property = try await api.send(.get, "/api/v1/check?email=JO.BLOGGS@example.com&topic=residential-property")
            #expect(property.json["allowed"] as? Bool == true)
            let stranger = try await api.send(.get, "/api/v1/check?email=nobody@example.com&topic=events")
            #expect(stranger.json["allowed"] as? Bool == false && stranger.json["reason"] as? String == "unknown")

            let prefs = try await api.send(.get, "/api/v1/contacts/\(id)/preferences").items
            #expect(prefs.count == 2)
            #expect(prefs.first { $0["topic"] as? String == "events" }?["mayEmail"] as? Bool == false)
            #expect(prefs.first { $0["topic"] as? String == "residential-property" }?["mayEmail"] as? Bool == true)
            #expect(try await api.ledger.verify().isIntact)
        }
    }

    @Test func sameValueSaysNothingChanged() async throws {
        try await withAPI { api in
            try await api.createTopic("news")
            let id = try await api.createContact("ann@example.com")
            let body: [String: Any] = ["source": "api", "preferences": [["topic": "news", "granted": true]]]
            _ = try await api.send(.put, "/api/v1/contacts/\(id)/preferences", json: body)
            let again = try await api.send(.put, "/api/v1/contacts/\(id)/preferences", json: body)
            #expect(again.status == .ok)
            #expect((again.json["recorded"] as? [Any])?.isEmpty == true)
            #expect(again.json["message"] as? String == "nothing changed: news already granted")
            #expect(try await api.send(.get, "/api/v1/contacts/\(id)/timeline").items.count == 1)
        }
    }
}

/// Answers written by hand on hot paths are the bytes the API's JSON encoder writes.
@Suite struct HandWrittenJSONTests {
    /// Every part of an access export, each optional both present and absent, written by hand and by JSONEncoder.
    @Test func anAccessExportIsWhatJSONEncoderWrites() throws {
        let t = "2026-11-29T10:00:00.123Z", u = "2027-01-01T00:00:00.000Z"
        let full: [String: Any] = [
            "generatedAt": t,
            "contact": ["id": "c1", "email": "jo@example.com", "name": "Jo \"Q\" B/ü", "externalId": "crm\n1", "locale": "de-AT", "createdAt": t, "updatedAt": u],
            "preferences": [["topic": "news", "title": "News", "state": "granted", "since": t, "expiresAt": u],
                            ["topic": "events", "title": "Events", "state": "none", "since": t]],
            "events": [["id": "e1", "seq": 1, "topic": "news", "action": "granted", "from": "none", "to": "granted", "source": "staff", "channel": "phone",
                        "actorKind": "staff", "actorId": "ann@example.com", "occurredAt": t, "recordedAt": u, "expiresAt": u, "noticeVersion": 2,
                        "formId": "f", "formVersion": 3, "batchId": "import-1", "evidence": ["ip": "203.0.113.9", "userAgent": "UA/1.0", "note": "said \"yes\"\tok"],
                        "evidenceShredded": false, "hash": "ab"],
                       ["id": "e2", "seq": 2, "topic": "news", "action": "withdrawn", "from": "granted", "to": "withdrawn", "source": "api",
                        "actorKind": "api_key", "occurredAt": t, "recordedAt": t, "evidence": [String: Any](), "evidenceShredded": true, "hash": "cd"],
                       ["id": "e3", "seq": 3, "topic": "news", "action": "granted", "from": "withdrawn", "to": "granted", "source": "form",
                        "actorKind": "subject", "occurredAt": t, "recordedAt": t, "evidenceShredded": false, "hash": "ef"]],
            "notices": [["topic": "news", "version": 2, "text": "We email\nyou.", "publishedAt": t]],
            "forms": [["id": "f", "version": 3, "title": "Sign up"]],
            "requests": [["id": "r1", "kind": "access", "status": "open", "channel": "email", "note": "asked", "createdAt": t, "dueAt": u],
                         ["id": "r2", "kind": "erasure", "status": "closed", "channel": "portal", "createdAt": t, "dueAt": u]],
            "receipts": [["eventId": "e1", "jws": "a.b.c"]],
            "emails": [["kind": "email.confirmation", "status": "sent", "queuedAt": t, "sentAt": u], ["kind": "email.receipt", "status": "pending", "queuedAt": t]],
            "disclosures": [["recipient": "https://crm.example", "event": "consent.changed", "status": "delivered", "queuedAt": t, "deliveredAt": u],
                            ["recipient": "https://crm.example", "event": "contact.created", "status": "pending", "queuedAt": t]],
            "erasedAt": u,
        ]
        var empty = full
        empty["erasedAt"] = nil
        for key in ["preferences", "events", "notices", "forms", "requests", "receipts", "emails", "disclosures"] { empty[key] = [Any]() }
        empty["contact"] = ["id": "c2", "email": "x@example.com", "createdAt": t, "updatedAt": t]
        for document in [full, empty] {
            let export = try JSONCoding.decoder.decode(PersonalDataExport.self, from: JSONSerialization.data(withJSONObject: document))
            #expect(String(decoding: export.json, as: UTF8.self) == String(decoding: try JSONCoding.encoder.encode(export), as: UTF8.self))
        }
    }

    @Test func theChangeAnswerIsWhatJSONEncoderWrites() throws {
        let at = Date(timeIntervalSince1970: 1_796_245_049.151)
        let contact = UUID.timeOrdered()
        let plain = ConsentEvent(id: UUID.timeOrdered(), contactID: contact, seq: 7, topicKey: "news", action: .withdrawn, fromState: .granted, toState: .withdrawn,
                                 source: .api, channel: nil, actor: Actor(kind: .apiKey, id: "k1"), occurredAt: at, recordedAt: at.addingTimeInterval(0.002),
                                 expiresAt: nil, noticeVersion: nil, formID: nil, formVersion: nil, batchID: nil, sealedEvidence: nil, prevHash: Data(count: 32))
        let full = ConsentEvent(id: UUID.timeOrdered(), contactID: contact, seq: 8, topicKey: "hr-training", action: .granted, fromState: .none, toState: .granted,
                                source: .staff, channel: .phone, actor: Actor(kind: .staff, id: nil), occurredAt: Date(timeIntervalSince1970: 946_684_800.000_4),
                                recordedAt: at, expiresAt: at.addingTimeInterval(86_400 * 730), noticeVersion: 3, formID: "f/1", formVersion: 2,
                                batchID: "b\"1", sealedEvidence: Data([1]), prevHash: Data(repeating: 0xab, count: 32))
        let personal = PersonalEvidence(ipAddress: "203.0.113.9", userAgent: "Mozilla/5.0 \"x\"", note: "said yes\non the phone\u{1}; jörg")
        let samples = [
            ChangeResultJSON(contactId: contact.lowercasedString, recorded: [], unchanged: [], message: "", preferences: [], confirmationRequestedFor: []),
            ChangeResultJSON(contactId: contact.lowercasedString,
                             recorded: [EventJSON(plain, personal: nil, shredded: false), EventJSON(full, personal: personal, shredded: true)],
                             unchanged: [UnchangedJSON(topic: "events", state: "granted", reason: "already granted")],
                             message: "recorded 2 changes; a confirmation email was queued for news",
                             preferences: [
                                PreferenceJSON(topic: "news", title: "News & \"views\"", category: "", state: "withdrawn", mayEmail: false, since: at, expiresAt: nil),
                                PreferenceJSON(topic: "events", title: "Events", category: "Local/UK", state: "granted", mayEmail: true, since: nil,
                                               expiresAt: at.addingTimeInterval(1)),
                             ],
                             confirmationRequestedFor: ["news", "a\tb"]),
        ]
        for sample in samples {
            let expected = try JSONCoding.encoder.encode(sample) + Data("\n".utf8)
            #expect(String(decoding: sample.encoded, as: UTF8.self) == String(decoding: expected, as: UTF8.self))
        }
    }

    @Test func theSingleCheckAnswerIsWhatJSONEncoderWrites() throws {
        let at = Date(timeIntervalSince1970: 1_796_245_049.151)
        let samples = [
            CheckJSON(email: "jo@example.com", topic: "news", allowed: true, reason: "granted", contactId: UUID.timeOrdered().lowercasedString,
                      since: at, expiresAt: at.addingTimeInterval(86_400 * 730)),
            CheckJSON(email: "a/b\"c\\d@example.com", topic: "hr-training", allowed: false, reason: "unknown", contactId: nil, since: nil, expiresAt: nil),
            CheckJSON(email: "jörg.o'brien@bücher.example", topic: "x", allowed: false, reason: "withdrawn", contactId: "id",
                      since: Date(timeIntervalSince1970: 946_684_800.000_4), expiresAt: nil),
        ]
        for sample in samples {
            let expected = try JSONCoding.encoder.encode(sample) + Data("\n".utf8)
            #expect(String(decoding: sample.encoded, as: UTF8.self) == String(decoding: expected, as: UTF8.self))
        }
    }

    @Test func theBatchCheckAnswerIsWhatJSONEncoderWrites() throws {
        let samples = [
            BatchCheckJSON(topic: "news", results: []),
            BatchCheckJSON(topic: "hr-training", results: [
                .init(email: "jo@example.com", allowed: true, reason: "granted"),
                .init(email: "a/b\"c\\d@example.com", allowed: false, reason: "unknown"),
                .init(email: "jörg.o'brien@bücher.example", allowed: false, reason: "withdrawn"),
                .init(email: "line\u{2028}sep\u{1}@example.com", allowed: false, reason: "suppressed"),
            ]),
        ]
        for sample in samples {
            let expected = try JSONCoding.encoder.encode(sample) + Data("\n".utf8)
            #expect(String(decoding: sample.encoded, as: UTF8.self) == String(decoding: expected, as: UTF8.self))
        }
    }
}

@Suite struct AuthTests {
    @Test func missingOrWrongKeysAreRefused() async throws {
        try await withAPI { api in
            let none = try await api.client.executeRequest(uri: "/api/v1/topics", method: .get, headers: [:], body: nil)
            #expect(none.status == .unauthorized)
            #expect(none.headers[.wwwAuthenticate] == "Bearer realm=\"assent\"")
            #expect(none.headers[.contentType] == "application/problem+json")
            #expect(try await api.send(.get, "/api/v1/topics", token: "assent_nope_nope").status == .unauthorized)
            #expect(try await api.send(.get, "/api/v1/topics", token: "garbage").status == .unauthorized)
            // The scheme is case-insensitive and white space around the token is ignored (RFC 9110); nothing else passes.
            let token = try await api.newKey(.read)
            for (header, status) in [("BEARER \(token)", HTTPResponse.Status.ok), ("bearer   \(token) ", .ok), ("Bearer\(token)", .unauthorized),
                                     ("Basic \(token)", .unauthorized), ("Bearer \(token)x", .unauthorized), ("Bearer", .unauthorized),
                                     ("Bearer \t\(token)\t", .ok), ("Bearer \u{A0}\(token)\u{3000}", .ok), ("Bearer \(token)\u{E9}", .unauthorized),
                                     ("Bearer \u{E9}\(token)", .unauthorized), ("Bearer ", .unauthorized), ("Bearer \u{A0}", .unauthorized)] {
                let response = try await api.client.executeRequest(uri: "/api/v1/topics", method: .get, headers: [.authorization: header], body: nil)
                #expect(response.status == status, "\(header)")
            }
            // The field is one: a second (even the same key) is refused, naming the problem.
            var twice = HTTPFields()
            twice.append(HTTPField(name: .authorization, value: "Bearer \(token)"))
            twice.append(HTTPField(name: .authorization, value: "Bearer \(token)"))
            let doubled = try await api.client.executeRequest(uri: "/api/v1/topics", method: .get, headers: twice, body: nil)
            #expect(doubled.status == .unauthorized)
            #expect(String(buffer: doubled.body).contains("send one Authorization header"))
            // Public routes need no key.
            let health = try await api.client.executeRequest(uri: "/healthz", method: .get, headers: [:], body: nil)
            #expect(health.status == .ok)
            let ready = try await api.client.executeRequest(uri: "/readyz", method: .get, headers: [:], body: nil)
            #expect(ready.status == .ok)
        }
    }

    /// The token after a Bearer header's scheme, read from its bytes: white space on either side is
    /// taken off (ASCII's and Unicode's), anything else is part of the token. (Headers reach the
    /// server with their own ends trimmed, so this is what only raw text can show.)
    @Test func bearerTokensAreReadBetweenTheirWhiteSpace() throws {
        let (key, token) = APIKey.generate(name: "t", scope: .read, now: Date())
        for header in ["Bearer \(token)", "bearer \t\(token)\t ", "Bearer \(token)\u{0B}\r", "BEARER \u{A0}\(token)\u{A0}", "Bearer \u{3000}\(token) "] {
            let presented = try #require(Gate.presentedKey(header), "\(header)")
            #expect(presented.id == key.id && key.matches(secretDigest: presented.secretDigest), "\(header)")
        }
        for header in ["Bearer ", "bearer \t ", "Bearer", "Bear", "", "Bearer \(token)x", "Bearer x\(token)", "Bearer \(token)\u{E9}"] {
            #expect(Gate.presentedKey(header).map { $0.id == key.id && key.matches(secretDigest: $0.secretDigest) } != true, "\(header)")
        }
    }

    /// Before the fix the probe waited for the pool without end; the time limit stops such a hang.
    @Test(.timeLimit(.minutes(1))) func readinessIsFalseWhenTheDatabaseIsUnreachable() async throws {
        // A PostgreSQL server that is not there (a port nobody listens on).
        let store = PostgresStore(location: PostgresLocation(host: "127.0.0.1", port: try freeLocalPort(), username: "assent", password: nil,
                                                             database: "assent", tls: .disable), maxConnections: 1)
        defer { store.shutdown() }
        let app = Application(router: try await buildRouter(ledger: Ledger(store: store, masterKey: .generate())))
        try await app.test(.router) { client in
            let ready = try await client.executeRequest(uri: "/readyz", method: .get, headers: [:], body: nil)
            #expect(ready.status == .serviceUnavailable, "\(String(buffer: ready.body))")
            let health = try await client.executeRequest(uri: "/healthz", method: .get, headers: [:], body: nil)
            #expect(health.status == .ok, "the process itself is alive")
        }
    }

    @Test func scopesAreEnforced() async throws {
        try await withAPI { api in
            let read = try await api.newKey(.read)
            let write = try await api.newKey(.write)
            #expect(try await api.send(.get, "/api/v1/topics", token: read).status == .ok)
            let denied = try await api.send(.post, "/api/v1/contacts", json: ["email": "a@example.com"], token: read)
            #expect(denied.status == .forbidden)
            #expect(try await api.send(.post, "/api/v1/contacts", json: ["email": "a@example.com"], token: write).status == .created)
            #expect(try await api.send(.post, "/api/v1/topics", json: ["key": "x", "title": "X", "notice": "n"], token: write).status == .forbidden)
            #expect(try await api.send(.get, "/api/v1/keys", token: write).status == .forbidden)
        }
    }

    @Test func revokedKeysStopWorking() async throws {
        try await withAPI { api in
            let created = try await api.send(.post, "/api/v1/keys", json: ["name": "crm", "scope": "read"])
            #expect(created.status == .created)
            let token = try #require(created.json["token"] as? String)
            let id = try #require(created.json["id"] as? String)
            #expect(try await api.send(.get, "/api/v1/topics", token: token).status == .ok)
            let listed = try await api.send(.get, "/api/v1/keys")
            let secret = try #require(APIKey.parse(token: token)?.secret)
            #expect(!listed.text.contains(secret), "the secret is never listed")
            #expect(try await api.send(.delete, "/api/v1/keys/\(id)").status == .ok)
            let after = try await api.send(.get, "/api/v1/topics", token: token)
            #expect(after.status == .unauthorized)
            #expect(after.json["detail"] as? String == "the API key has been revoked")
        }
    }
}

@Suite struct BadInputTests {
    struct Case: Sendable, CustomStringConvertible {
        let name: String
        let body: String
        let contentType: String
        let status: Int
        let field: String?
        var description: String { name }
    }

    static let cases: [Case] = [
        Case(name: "unknown topic", body: #"{"source":"api","preferences":[{"topic":"evnts","granted":true}]}"#, contentType: "application/json", status: 422, field: "preferences[0].topic"),
        Case(name: "unknown source", body: #"{"source":"carrier-pigeon","preferences":[{"topic":"news","granted":true}]}"#, contentType: "application/json", status: 422, field: "source"),
        Case(name: "staff without note", body: #"{"source":"staff","channel":"phone","preferences":[{"topic":"news","granted":true}]}"#, contentType: "application/json", status: 422, field: "evidence.note"),
        Case(name: "staff without channel", body: #"{"source":"staff","evidence":{"note":"said yes"},"preferences":[{"topic":"news","granted":true}]}"#, contentType: "application/json", status: 422, field: "channel"),
        Case(name: "source reserved for confirmation links", body: #"{"source":"email_link","preferences":[{"topic":"news","granted":true}]}"#, contentType: "application/json", status: 422, field: "source"),
        Case(name: "unknown channel", body: #"{"source":"staff","channel":"fax","evidence":{"note":"x"},"preferences":[{"topic":"news","granted":true}]}"#, contentType: "application/json", status: 422, field: "channel"),
        Case(name: "granted is a string", body: #"{"source":"api","preferences":[{"topic":"news","granted":"yes"}]}"#, contentType: "application/json", status: 400, field: "preferences[0].granted"),
        Case(name: "preferences is an object", body: #"{"source":"api","preferences":{"news":true}}"#, contentType: "application/json", status: 400, field: "preferences"),
        Case(name: "missing source", body: #"{"preferences":[{"topic":"news","granted":true}]}"#, contentType: "application/json", status: 400, field: "source"),
        Case(name: "unknown field", body: #"{"source":"api","evidnce":{},"preferences":[{"topic":"news","granted":true}]}"#, contentType: "application/json", status: 400, field: "evidnce"),
        Case(name: "unknown evidence field", body: #"{"source":"api","evidence":{"ipaddress":"1.2.3.4"},"preferences":[{"topic":"news","granted":true}]}"#, contentType: "application/json", status: 400, field: "evidence.ipaddress"),
        Case(name: "bad ip", body: #"{"source":"api","evidence":{"ip":"999.1.1.1"},"preferences":[{"topic":"news","granted":true}]}"#, contentType: "application/json", status: 422, field: "evidence.ip"),
        Case(name: "bad timestamp", body: #"{"source":"api","occurredAt":"yesterday","preferences":[{"topic":"news","granted":true}]}"#, contentType: "application/json", status: 400, field: "occurredAt"),
        Case(name: "future timestamp", body: #"{"source":"api","occurredAt":"2999-01-01T00:00:00Z","preferences":[{"topic":"news","granted":true}]}"#, contentType: "application/json", status: 422, field: "occurredAt"),
        Case(name: "huge number", body: #"{"source":"api","preferences":[{"topic":"news","granted":true,"noticeVersion":99999999999999999999999}]}"#, contentType: "application/json", status: 400, field: "body"),
        Case(name: "empty preferences", body: #"{"source":"api","preferences":[]}"#, contentType: "application/json", status: 422, field: "preferences"),
        Case(name: "duplicate topic", body: #"{"source":"api","preferences":[{"topic":"news","granted":true},{"topic":"news","granted":false}]}"#, contentType: "application/json", status: 422, field: "preferences[1].topic"),
        Case(name: "not json", body: "source=api", contentType: "application/json", status: 400, field: "body"),
        Case(name: "form encoded", body: "source=api", contentType: "application/x-www-form-urlencoded", status: 415, field: nil),
        Case(name: "NUL in note", body: #"{"source":"staff","channel":"phone","evidence":{"note":"a\u0000b"},"preferences":[{"topic":"news","granted":true}]}"#, contentType: "application/json", status: 422, field: "evidence.note"),
        Case(name: "overlong note", body: #"{"source":"staff","channel":"phone","evidence":{"note":""# + String(repeating: "x", count: 5_000) + #""},"preferences":[{"topic":"news","granted":true}]}"#, contentType: "application/json", status: 422, field: "evidence.note"),
        Case(name: "oversized body", body: #"{"source":"api","evidence":{"note":""# + String(repeating: "x", count: 70_000) + #""},"preferences":[]}"#, contentType: "application/json", status: 413, field: nil),
        Case(name: "deeply nested", body: String(repeating: "[", count: 10_000) + String(repeating: "]", count: 10_000), contentType: "application/json", status: 400, field: nil),
    ]

    @Test(arguments: cases)
    func badPreferenceWritesAreRefusedAndChangeNothing(_ c: Case) async throws {
        try await withAPI { api in
            try await api.createTopic("news")
            let id = try await api.createContact("ann@example.com")
            var headers: HTTPFields = [:]
            headers[.contentType] = c.contentType
            let reply = try await api.send(.put, "/api/v1/contacts/\(id)/preferences", raw: c.body, headers: headers)
            #expect(Int(reply.status.code) == c.status, "\(reply.text)")
            #expect(reply.headers[.contentType] == "application/problem+json")
            if let field = c.field { #expect(reply.problemFields.contains(field), "\(reply.text)") }
            #expect(try await api.send(.get, "/api/v1/contacts/\(id)/timeline").items.isEmpty)
            #expect(try await api.ledger.store.preferences(contactID: UUID(uuidString: id)!).isEmpty)
        }
    }

    @Test func badContactsAreRefusedAndCreateNothing() async throws {
        try await withAPI { api in
            let malformed = try await api.send(.post, "/api/v1/contacts", json: ["email": "not-an-email"])
            #expect(malformed.status == .unprocessableContent && malformed.problemFields == ["email"])
            let wrongType = try await api.send(.post, "/api/v1/contacts", json: ["email": 42])
            #expect(wrongType.status == .badRequest && wrongType.problemFields == ["email"])
            let badLocale = try await api.send(.post, "/api/v1/contacts", json: ["email": "a@example.com", "locale": "english please"])
            #expect(badLocale.status == .unprocessableContent && badLocale.problemFields == ["locale"])
            _ = try await api.createContact("taken@example.com", externalId: "crm-1")
            let duplicate = try await api.send(.post, "/api/v1/contacts", json: ["email": "TAKEN@example.com"])
            #expect(duplicate.status == .conflict && duplicate.problemFields == ["email"])
            let duplicateExternal = try await api.send(.post, "/api/v1/contacts", json: ["email": "b@example.com", "externalId": "crm-1"])
            #expect(duplicateExternal.status == .conflict && duplicateExternal.problemFields == ["externalId"])
            #expect(try await api.send(.get, "/api/v1/contacts").items.count == 1)
            #expect(try await api.send(.get, "/api/v1/contacts/not-a-uuid").status == .badRequest)
            #expect(try await api.send(.get, "/api/v1/contacts/\(UUID())").status == .notFound)
        }
    }

    @Test func badTopicsAreRefused() async throws {
        try await withAPI { api in
            let badKey = try await api.send(.post, "/api/v1/topics", json: ["key": "HR Training", "title": "HR", "notice": "n"])
            #expect(badKey.status == .unprocessableContent && badKey.problemFields == ["key"])
            let noNotice = try await api.send(.post, "/api/v1/topics", json: ["key": "hr", "title": "HR"])
            #expect(noNotice.status == .badRequest && noNotice.problemFields == ["notice"])
            let blankNotice = try await api.send(.post, "/api/v1/topics", json: ["key": "hr", "title": "HR", "notice": "  "])
            #expect(blankNotice.status == .unprocessableContent && blankNotice.problemFields == ["notice"])
            #expect(try await api.send(.get, "/api/v1/topics").items.isEmpty)
            let check = try await api.send(.get, "/api/v1/check?email=a@example.com&topic=nope")
            #expect(check.status == .unprocessableContent && check.problemFields == ["topic"])
            let noEmail = try await api.send(.get, "/api/v1/check?topic=nope")
            #expect(noEmail.status == .badRequest && noEmail.problemFields == ["email"])
            #expect(try await api.send(.get, "/api/v1/nowhere").status == .notFound)
        }
    }
}

@Suite struct ResourceTests {
    @Test func topicsAndNoticesLifecycle() async throws {
        try await withAPI { api in
            try await api.createTopic("events")
            let patched = try await api.send(.patch, "/api/v1/topics/events", json: ["title": "Events & webinars", "consentLifetimeDays": 730])
            #expect(patched.json["title"] as? String == "Events & webinars" && patched.json["consentLifetimeDays"] as? Int == 730)
            let cleared = try await api.send(.patch, "/api/v1/topics/events", json: ["consentLifetimeDays": NSNull()])
            #expect(cleared.json["consentLifetimeDays"] is NSNull)
            let v2 = try await api.send(.post, "/api/v1/topics/events/notices", json: ["text": "Updated wording."])
            #expect(v2.status == .created && v2.json["version"] as? Int == 2)
            #expect(try await api.send(.get, "/api/v1/topics/events/notices/1").json["text"] as? String == "We will email you about events.")
            #expect(try await api.send(.get, "/api/v1/topics/events/notices").items.count == 2)
            #expect(try await api.send(.get, "/api/v1/topics/events/notices/3").status == .notFound)
            let topic = try await api.send(.get, "/api/v1/topics/events")
            #expect((topic.json["notice"] as? [String: Any])?["version"] as? Int == 2)
            let retired = try await api.send(.delete, "/api/v1/topics/events")
            #expect(retired.json["status"] as? String == "retired")
            #expect(try await api.send(.get, "/api/v1/topics").items.isEmpty)
            #expect(try await api.send(.get, "/api/v1/topics?includeRetired=true").items.count == 1)
            let id = try await api.createContact("ann@example.com")
            let refused = try await api.send(.put, "/api/v1/contacts/\(id)/preferences", json: ["source": "api", "preferences": [["topic": "events", "granted": true]]])
            #expect(refused.status == .unprocessableContent && refused.problemFields == ["preferences[0].topic"])
        }
    }

    @Test func contactsAreFoundByEmailAndExternalIdAndEditable() async throws {
        try await withAPI { api in
            let id = try await api.createContact("Ann@Example.com", externalId: "crm-7")
            #expect(try await api.send(.get, "/api/v1/contacts?email=ann%40example.com").items.first?["id"] as? String == id)
            #expect(try await api.send(.get, "/api/v1/contacts?externalId=crm-7").items.first?["id"] as? String == id)
            #expect(try await api.send(.get, "/api/v1/contacts?externalId=crm-8").items.isEmpty)
            let edited = try await api.send(.patch, "/api/v1/contacts/\(id)", json: ["name": "Ann Lee", "externalId": NSNull()])
            #expect(edited.json["name"] as? String == "Ann Lee" && edited.json["externalId"] is NSNull)
            #expect(try await api.send(.get, "/api/v1/contacts/\(id)").json["name"] as? String == "Ann Lee")
        }
    }

    @Test func listsPageWithCursors() async throws {
        try await withAPI(.sqlite) { api in
            try await api.createTopic("news")
            let id = try await api.createContact("ann@example.com")
            for i in 0..<7 {
                _ = try await api.send(.put, "/api/v1/contacts/\(id)/preferences", json: ["source": "api", "preferences": [["topic": "news", "granted": i.isMultiple(of: 2)]]])
            }
            var seqs: [Int] = []
            var cursor: String?
            repeat {
                let page = try await api.send(.get, "/api/v1/contacts/\(id)/timeline?limit=3" + (cursor.map { "&cursor=\($0)" } ?? ""))
                seqs += page.items.compactMap { $0["seq"] as? Int }
                cursor = page.json["nextCursor"] as? String
            } while cursor != nil
            #expect(seqs == [7, 6, 5, 4, 3, 2, 1])
            #expect(try await api.send(.get, "/api/v1/contacts/\(id)/timeline?limit=0").status == .badRequest)
            #expect(try await api.send(.get, "/api/v1/contacts/\(id)/timeline?cursor=%%%").status == .badRequest)
            for i in 0..<4 { _ = try await api.createContact("p\(i)@example.com") }
            var emails: [String] = []
            cursor = nil
            repeat {
                let page = try await api.send(.get, "/api/v1/contacts?limit=2" + (cursor.map { "&cursor=\($0)" } ?? ""))
                emails += page.items.compactMap { $0["email"] as? String }
                cursor = page.json["nextCursor"] as? String
            } while cursor != nil
            #expect(emails.count == 5 && Set(emails).count == 5)
        }
    }
}

@Suite struct IdempotencyTests {
    @Test(arguments: StoreKind.available)
    func retriedWriteRecordsOnceAndReplaysTheResponse(_ backend: Backend) async throws {
        try await withAPI(backend) { api in
            try await api.createTopic("news")
            var headers: HTTPFields = [:]
            headers[.idempotencyKey] = "create-ann-1"
            let first = try await api.send(.post, "/api/v1/contacts", json: ["email": "ann@example.com"], headers: headers)
            let retry = try await api.send(.post, "/api/v1/contacts", json: ["email": "ann@example.com"], headers: headers)
            #expect(first.status == .created && retry.status == .created)
            #expect(first.body == retry.body)
            #expect(retry.headers[.idempotentReplayed] == "true")
            let id = try #require(first.json["id"] as? String)

            headers[.idempotencyKey] = "ann-opt-in-1"
            let body: [String: Any] = ["source": "form", "preferences": [["topic": "news", "granted": true]]]
            let a = try await api.send(.put, "/api/v1/contacts/\(id)/preferences", json: body, headers: headers)
            // Someone withdraws in between; a late retry of the opt-in must not re-grant.
            _ = try await api.send(.put, "/api/v1/contacts/\(id)/preferences", json: ["source": "api", "preferences": [["topic": "news", "granted": false]]])
            let b = try await api.send(.put, "/api/v1/contacts/\(id)/preferences", json: body, headers: headers)
            #expect(a.body == b.body, "\(b.text)")
            #expect(try await api.send(.get, "/api/v1/contacts/\(id)/timeline").items.count == 2)

            let misuse = try await api.send(.put, "/api/v1/contacts/\(id)/preferences",
                                            json: ["source": "form", "preferences": [["topic": "news", "granted": false]]], headers: headers)
            #expect(misuse.status == .unprocessableContent && misuse.problemFields == ["Idempotency-Key"])
        }
    }

    @Test func failedRequestDoesNotBurnItsKey() async throws {
        try await withAPI { api in
            var headers: HTTPFields = [:]
            headers[.idempotencyKey] = "k-1"
            let bad = try await api.send(.post, "/api/v1/contacts", json: ["email": "nope"], headers: headers)
            #expect(bad.status == .unprocessableContent)
            let good = try await api.send(.post, "/api/v1/contacts", json: ["email": "ann@example.com"], headers: headers)
            #expect(good.status == .created)
        }
    }
}

@Suite struct OpenAPITests {
    /// The document and the route table describe the same API: every served
    /// route is documented and every documented route is served.
    @Test func everyRouteIsDocumentedAndViceVersa() throws {
        let document = try JSONSerialization.jsonObject(with: openAPIDocument()) as? [String: Any]
        #expect(document?["openapi"] as? String == "3.1.0")
        let paths = document?["paths"] as? [String: [String: Any]] ?? [:]
        let verbs: Set<String> = ["get", "put", "post", "delete", "patch", "head", "options"]
        let documented = Set(paths.flatMap { path, ops in ops.keys.filter(verbs.contains).map { "\($0.uppercased()) \(path)" } })
        let api = API(ledger: Ledger(store: MemoryStore(), masterKey: .generate()), openAPIDocument: Data())
        let served = Set(api.routes.map { "\($0.method.rawValue) \($0.path)" })
        #expect(served.subtracting(documented).sorted() == [], "served but not documented")
        #expect(documented.subtracting(served).sorted() == [], "documented but not served")
        #expect(served.count == api.routes.count, "no route is registered twice")
    }

    @Test func documentIsServed() async throws {
        try await withAPI { api in
            let response = try await api.client.executeRequest(uri: "/api/v1/openapi.json", method: .get, headers: [:], body: nil)
            #expect(response.status == .ok)
            #expect(Data(response.body.readableBytesView) == (try openAPIDocument()))
        }
    }
}

@Suite struct ConfirmationPageTests {
    /// Makes a pending double opt-in and returns the emailed link's path.
    func pendingLink(_ api: APIHarness, topics: [String] = ["events"]) async throws -> (contact: String, path: String) {
        for topic in topics {
            let r = try await api.send(.post, "/api/v1/topics", json: ["key": topic, "title": topic.capitalized, "requiresDoubleOptIn": true, "notice": "About \(topic)."])
            #expect(r.status == .created)
        }
        let id = try await api.createContact("jo@example.com")
        let put = try await api.send(.put, "/api/v1/contacts/\(id)/preferences",
                                     json: ["source": "form", "preferences": topics.map { ["topic": $0, "granted": true] }])
        #expect(put.items.isEmpty && (put.json["recorded"] as? [[String: Any]])?.allSatisfy { $0["to"] as? String == "pending" } == true)
        let item = try #require(try await api.ledger.store.outboxItems(status: .pending, limit: 1).first)
        let email = try ConfirmationEmail.open(item, masterKey: api.ledger.masterKey)
        return (id, "/confirm/\(email.token)")
    }

    func page(_ api: APIHarness, _ method: HTTPRequest.Method, _ path: String, form: String? = nil) async throws -> (HTTPResponse.Status, HTTPFields, String) {
        var headers: HTTPFields = [:]
        if form != nil { headers[.contentType] = "application/x-www-form-urlencoded" }
        let r = try await api.client.executeRequest(uri: path, method: method, headers: headers, body: form.map { ByteBuffer(string: $0) })
        return (r.status, r.headers, String(buffer: r.body))
    }

    @Test(arguments: StoreKind.available)
    func getShowsAButtonAndChangesNothingPostConfirms(_ kind: StoreKind) async throws {
        try await withAPI(kind) { api in
            let (id, path) = try await pendingLink(api, topics: ["events", "news"])
            let (status, headers, html) = try await page(api, .get, path)
            #expect(status == .ok && html.contains("<form method=\"post\" action=\"\(path)\">") && html.contains("About events."))
            #expect(headers[.contentSecurityPolicy]?.contains("default-src 'none'") == true && headers.contains { $0.name.canonicalName == "referrer-policy" && $0.value == "same-origin" })
            #expect(try await api.send(.get, "/api/v1/check?email=jo%40example.com&topic=events").json["reason"] as? String == "pending")
            // One by one: confirm news only.
            let (one, _, thanks) = try await page(api, .post, path, form: "topic=news&scope=selected")
            #expect(one == .ok && thanks.contains("Thank you") && thanks.contains("News") && thanks.contains("Still waiting"))
            #expect(try await api.send(.get, "/api/v1/check?email=jo%40example.com&topic=news").json["allowed"] as? Bool == true)
            #expect(try await api.send(.get, "/api/v1/check?email=jo%40example.com&topic=events").json["reason"] as? String == "pending")
            let (rest, _, _) = try await page(api, .post, path, form: "topic=events&scope=selected")
            #expect(rest == .ok)
            let timeline = try await api.send(.get, "/api/v1/contacts/\(id)/timeline").items
            #expect(timeline.prefix(2).allSatisfy { $0["source"] as? String == "email_link" && $0["action"] as? String == "confirmed" })
            // Reuse changes nothing and says so.
            let (again, _, used) = try await page(api, .post, path, form: "topic=events&scope=selected")
            #expect(again == .gone && used.contains("Already confirmed"))
            #expect(try await api.send(.get, "/api/v1/contacts/\(id)/timeline").items.count == 4)
        }
    }

    @Test func unknownAndEmptySelectionsAreClearPages() async throws {
        try await withAPI { api in
            let (_, path) = try await pendingLink(api)
            let (none, _, noneHTML) = try await page(api, .post, path, form: "scope=selected")
            #expect(none == .unprocessableContent && noneHTML.contains("Please choose at least one topic."))
            let (unknown, _, unknownHTML) = try await page(api, .get, "/confirm/not-a-real-token")
            #expect(unknown == .notFound && unknownHTML.contains("This link is not valid"))
            let (bogusPost, _, _) = try await page(api, .post, "/confirm/not-a-real-token", form: "topic=events")
            #expect(bogusPost == .notFound)
            #expect(try await api.send(.get, "/api/v1/check?email=jo%40example.com&topic=events").json["reason"] as? String == "pending")
        }
    }
}

@Suite struct ReceiptTests {
    /// Verifies a compact JWS against a JWK set with joserfc, an independent
    /// JOSE implementation (Python); returns its verdict and payload.
    func verifyWithJoserfc(jws: String, jwks: String) throws -> (ok: Bool, output: String) {
        let dir = try TestDirectory.make()
        try jws.write(to: dir.appendingPathComponent("receipt.jws"), atomically: true, encoding: .utf8)
        try jwks.write(to: dir.appendingPathComponent("jwks.json"), atomically: true, encoding: .utf8)
        let script = """
        import json, sys
        from joserfc import jws
        from joserfc.jwk import KeySet
        keys = KeySet.import_key_set(json.load(open(sys.argv[1] + "/jwks.json")))
        try:
            token = jws.deserialize_compact(open(sys.argv[1] + "/receipt.jws").read(), keys, algorithms=["Ed25519"])
        except Exception as e:
            print("INVALID", type(e).__name__); sys.exit(1)
        print(json.loads(token.payload)["consentReceiptID"])
        """
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "-c", script, dir.path]
        let out = Pipe()
        process.standardOutput = out
        process.standardError = FileHandle.nullDevice
        try process.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus == 0, String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines))
    }

    @Test(.enabled(if: SMTPTestServer.shouldRun, "needs python3 with joserfc: run scripts/test"), arguments: StoreKind.available)
    func receiptsAreSignedAndVerifyWithAnIndependentJOSELibrary(_ kind: StoreKind) async throws {
        try await withAPI(kind) { api in
            _ = try await api.send(.post, "/api/v1/topics", json: ["key": "news", "title": "News", "requiresDoubleOptIn": false, "notice": "Monthly news by email."])
            let id = try await api.createContact("jo@example.com")
            let put = try await api.send(.put, "/api/v1/contacts/\(id)/preferences", json: ["source": "staff", "channel": "phone",
                                                                                          "evidence": ["note": "said yes"], "preferences": [["topic": "news", "granted": true]]])
            let eventID = try #require((put.json["recorded"] as? [[String: Any]])?.first?["id"] as? String)
            let reply = try await api.send(.get, "/api/v1/receipts/\(eventID)")
            #expect(reply.status == .ok)
            let receipt = try #require(reply.json["receipt"] as? [String: Any])
            #expect(receipt["version"] as? String == "KI-CR-v1.1.0" && receipt["consentReceiptID"] as? String == eventID)
            #expect(receipt["piiPrincipalId"] as? String == "jo@example.com" && receipt["collectionMethod"] as? String == "staff/phone")
            let purpose = ((receipt["services"] as? [[String: Any]])?.first?["purposes"] as? [[String: Any]])?.first
            #expect(purpose?["purpose"] as? String == "Monthly news by email." && purpose?["termination"] as? String == "until withdrawn")
            let jws = try #require(reply.json["jws"] as? String)

            let jwksReply = try await api.client.executeRequest(uri: "/.well-known/jwks.json", method: .get, headers: [:], body: nil)
            #expect(jwksReply.status == .ok && jwksReply.headers[.contentType] == "application/jwk-set+json")
            let jwks = String(buffer: jwksReply.body)
            let verdict = try verifyWithJoserfc(jws: jws, jwks: jwks)
            #expect(verdict.ok && verdict.output == eventID, "\(verdict.output)")

            // A forged payload with the original signature must fail.
            let parts = jws.split(separator: ".").map(String.init)
            let forged = Data(#"{"consentReceiptID":"forged"}"#.utf8).base64EncodedString().replacingOccurrences(of: "=", with: "")
                .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            let rejected = try verifyWithJoserfc(jws: [parts[0], forged, parts[2]].joined(separator: "."), jwks: jwks)
            #expect(!rejected.ok && rejected.output.hasPrefix("INVALID"), "\(rejected.output)")

            // The same key keeps signing.
            let again = try await api.send(.get, "/api/v1/receipts/\(eventID)")
            #expect((again.json["jws"] as? String)?.split(separator: ".").first == parts.first.map { Substring($0) })
        }
    }

    @Test func onlyGrantsConfirmationsAndWithdrawalsHaveReceipts() async throws {
        try await withAPI { api in
            _ = try await api.send(.post, "/api/v1/topics", json: ["key": "news", "title": "News", "notice": "News."])
            let id = try await api.createContact("jo@example.com")
            let put = try await api.send(.put, "/api/v1/contacts/\(id)/preferences", json: ["source": "form", "preferences": [["topic": "news", "granted": true]]])
            let requested = try #require((put.json["recorded"] as? [[String: Any]])?.first?["id"] as? String)
            #expect(try await api.send(.get, "/api/v1/receipts/\(requested)").status == .unprocessableContent)
            #expect(try await api.send(.get, "/api/v1/receipts/\(UUID())").status == .notFound)
            #expect(try await api.send(.get, "/api/v1/receipts/nope").status == .badRequest)
        }
    }
}

@Suite struct WireDateTests {
    @Test func timesAreShownToTheMillisecondStored() {
        // 1795940215280 ms is 1795940215.2799999... as a Double; it must read .280, as the ledger and webhooks have it.
        #expect(WireDate.format(Date(millisecondsSince1970: 1_795_940_215_280)) == "2026-11-29T08:16:55.280Z")
        #expect(WireDate.format(Date(millisecondsSince1970: 1_795_940_215_999)) == "2026-11-29T08:16:55.999Z")
        #expect(WireDate.format(Date(millisecondsSince1970: 1_795_940_215_000)) == "2026-11-29T08:16:55.000Z")
        #expect(WireDate.parse(WireDate.format(Date(millisecondsSince1970: 1_795_940_215_280)))?.millisecondsSince1970 == 1_795_940_215_280)
    }
}
