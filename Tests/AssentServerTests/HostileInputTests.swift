import AssentCore
import AssentServer
import AssentStore
import AssentTestSupport
import Foundation
import Hummingbird
import Testing

/// Hostile payloads in every text field of the JSON API and the public
/// form: each is refused with a 4xx or stored exactly and shown escaped;
/// nothing answers 5xx; nothing runs. On every store.
@Suite struct HostileInputTests {
    static let payloads: [String] = [
        "'; DROP TABLE contacts; --", "\" OR 1=1 --", "Robert'); DELETE FROM consent_events;--", "%' OR '%'='",
        "<script>alert(1)</script>", "\"><img src=x onerror=alert(1)>", "{{#items}}{{/items}}{{{raw}}}", "javascript:alert(1)",
        "a\u{0000}b", "\u{0000}", "\\u0000", "line\r\nBcc: victim@example.com", "\u{202E}gnp.exe", "e\u{0301}😀\u{FEFF}",
        String(repeating: "x", count: 5_000), String(repeating: "é", count: 3_000), "", " ", "null", "-1", "1e400",
    ]
    static let numbers: [String] = ["1e400", "-1e400", "99999999999999999999999999", "-99999999999999999999", "0.5", "-1", "\"7\"", "null", "true", "[]"]

    /// The JSON text of `value` (a string literal), by hand so that NUL and lone escapes go through as JSON escapes.
    static func literal(_ value: String) -> String {
        let data = try! JSONSerialization.data(withJSONObject: [value], options: [.fragmentsAllowed])
        return String(String(decoding: data, as: UTF8.self).dropFirst().dropLast())
    }

    struct Target {
        var method: HTTPRequest.Method
        var path: String
        /// The body with `FIELD` where the payload goes (a JSON string literal, or a raw number for numeric fields).
        var template: String
    }

    /// Every text field of every write, each with a baseline that is otherwise valid.
    static func textTargets(contact: String) -> [Target] {
        var out: [Target] = []
        let topic = #"{"key":"k","title":"T","description":"D","category":"c","notice":"N"}"#
        for field in ["key", "title", "description", "category", "notice"] {
            out.append(Target(method: .post, path: "/api/v1/topics", template: replacing(topic, field)))
        }
        let newContact = #"{"email":"z@example.com","name":"Z","externalId":"x-1","locale":"en"}"#
        for field in ["email", "name", "externalId", "locale"] {
            out.append(Target(method: .post, path: "/api/v1/contacts", template: replacing(newContact, field)))
        }
        for field in ["name", "externalId", "locale", "email"] {
            out.append(Target(method: .patch, path: "/api/v1/contacts/\(contact)", template: #"{"\#(field)":FIELD}"#))
        }
        let change = #"{"source":"api","channel":"phone","batchId":"b","preferences":[{"topic":"news","granted":true}],"evidence":{"ip":"203.0.113.9","userAgent":"UA","note":"N","formId":"f"}}"#
        for field in ["source", "channel", "batchId", "topic", "ip", "userAgent", "note", "formId"] {
            out.append(Target(method: .put, path: "/api/v1/contacts/\(contact)/preferences", template: replacing(change, field)))
        }
        for field in ["name", "scope"] {
            out.append(Target(method: .post, path: "/api/v1/keys", template: replacing(#"{"name":"n","scope":"read"}"#, field)))
        }
        for field in ["url", "description"] {
            out.append(Target(method: .post, path: "/api/v1/webhooks",
                              template: replacing(#"{"url":"https://hooks.example.com/a","description":"d","events":["consent.changed"]}"#, field)))
        }
        for field in ["id", "name", "description", "locale"] {
            out.append(Target(method: .post, path: "/api/v1/segments",
                              template: replacing(#"{"id":"s","name":"S","description":"D","topics":["news"],"locale":"en"}"#, field)))
        }
        for field in ["id", "title", "introduction", "successUrl", "language"] {
            out.append(Target(method: .post, path: "/api/v1/forms",
                              template: replacing(#"{"id":"f","title":"F","introduction":"I","topics":["news"],"successUrl":"https://example.org/t","language":"en"}"#, field)))
        }
        out.append(Target(method: .post, path: "/api/v1/check", template: #"{"topic":"news","emails":[FIELD]}"#))
        out.append(Target(method: .post, path: "/api/v1/check", template: #"{"topic":FIELD,"emails":["ann@example.com"]}"#))
        return out
    }

    static func replacing(_ template: String, _ field: String) -> String {
        // The field's value in the baseline is the first string after `"field":`.
        guard let key = template.range(of: "\"\(field)\":") else { fatalError("no field \(field) in \(template)") }
        let valueStart = key.upperBound
        let closing = template[template.index(after: valueStart)...].firstIndex(of: "\"")!
        return String(template[..<valueStart]) + "FIELD" + String(template[template.index(after: closing)...])
    }

    @Test(arguments: StoreKind.available)
    func everyTextFieldRefusesOrKeepsHostileValuesAndNothingFails(_ kind: StoreKind) async throws {
        try await withAPI(kind) { api in
            try await api.createTopic("news", doubleOptIn: false)
            let ann = try await api.createContact("ann@example.com")
            var sent = 0, accepted = 0
            var failures: [String] = []
            for target in Self.textTargets(contact: ann) {
                for payload in Self.payloads {
                    let body = target.template.replacingOccurrences(of: "FIELD", with: Self.literal(payload))
                    let reply = try await api.send(target.method, target.path, raw: body)
                    sent += 1
                    if reply.status.code >= 500 { failures.append("\(target.method) \(target.path) \(body.prefix(120)) -> \(reply.status.code) \(reply.text.prefix(200))") }
                    if reply.status.code < 300 { accepted += 1 }
                    if reply.status.code >= 400 && reply.status.code < 500 {
                        #expect(reply.headers[.contentType]?.hasPrefix("application/problem+json") == true, "a 4xx explains itself")
                    }
                }
            }
            #expect(failures.isEmpty, "\(failures.count) of \(sent) hostile requests failed with 5xx:\n\(failures.prefix(10).joined(separator: "\n"))")
            #expect(accepted > 40 && sent > 700)
            // Numbers out of range or of the wrong type.
            for number in Self.numbers {
                for (method, path, body) in [
                    (HTTPRequest.Method.post, "/api/v1/topics", #"{"key":"n\#(sent)","title":"T","notice":"N","consentLifetimeDays":\#(number)}"#),
                    (.put, "/api/v1/contacts/\(ann)/preferences", #"{"source":"api","preferences":[{"topic":"news","granted":true,"noticeVersion":\#(number)}]}"#),
                    (.get, "/api/v1/contacts/\(ann)/timeline?limit=\(number)", ""),
                ] {
                    let reply = try await api.send(method, path, raw: body.isEmpty ? nil : body)
                    #expect(reply.status.code < 500, "\(path) with \(number): \(reply.status.code) \(reply.text.prefix(200))")
                }
            }
            // Bodies that are not JSON, or JSON nested past any sense.
            let raws: [[UInt8]] = [[0xFF, 0xFE, 0x7B, 0x7D], Array(#"{"email":"a\#u{0}b@example.com"}"#.utf8), Array("{\"email\":".utf8),
                                   Array((String(repeating: "[", count: 10_000) + String(repeating: "]", count: 10_000)).utf8),
                                   Array((String(repeating: #"{"a":"#, count: 5_000) + "1" + String(repeating: "}", count: 5_000)).utf8)]
            for raw in raws {
                for path in ["/api/v1/contacts", "/api/v1/topics", "/api/v1/check"] {
                    var headers = HTTPFields()
                    headers[.authorization] = "Bearer \(api.adminToken)"
                    headers[.contentType] = "application/json"
                    let response = try await api.client.executeRequest(uri: path, method: .post, headers: headers, body: ByteBuffer(bytes: raw))
                    #expect(response.status.code >= 400 && response.status.code < 500, "\(path) with \(raw.prefix(12)): \(response.status.code)")
                }
            }
            // The NUL character is refused with a clear message; the text "\u0000" (a backslash, then u0000) is kept as written.
            let nul = try await api.send(.patch, "/api/v1/contacts/\(ann)", raw: #"{"name":"a\u0000b"}"#)
            #expect(nul.status == .unprocessableContent && nul.problemFields == ["name"] && nul.text.contains("NUL"), "\(nul.text)")
            let text = try await api.send(.patch, "/api/v1/contacts/\(ann)", raw: #"{"name":"a\\u0000b"}"#)
            #expect(text.status == .ok && text.json["name"] as? String == #"a\u0000b"#, "\(text.text)")
            #expect(try await api.send(.get, "/api/v1/contacts?search=a%00b").status == .badRequest)
            // What was stored comes back exactly, and nothing was dropped.
            let name = "<script>alert(1)</script>'; DROP TABLE contacts; --"
            let patched = try await api.send(.patch, "/api/v1/contacts/\(ann)", json: ["name": name])
            #expect(patched.status == .ok)
            #expect(try await api.send(.get, "/api/v1/contacts/\(ann)").json["name"] as? String == name)
            #expect(try await api.send(.get, "/api/v1/contacts").items.count >= 1)
            #expect(try await api.ledger.verify().isIntact)
            print("hostile input (\(kind)): \(sent + Self.numbers.count * 3 + raws.count * 3) requests, \(accepted) accepted and kept, none failed")
        }
    }

    /// Shown escaped on the hosted form: a hostile topic title and form text never become markup.
    @Test(arguments: StoreKind.available)
    func hostileTextIsShownEscapedOnThePublicForm(_ kind: StoreKind) async throws {
        try await withAPI(kind) { api in
            let script = "<script>alert(1)</script>"
            let topic = try await api.send(.post, "/api/v1/topics", json: ["key": "news", "title": script, "description": "\"><img src=x onerror=alert(2)>",
                                                                           "notice": script, "requiresDoubleOptIn": false])
            #expect(topic.status == .created)
            let form = try await api.send(.post, "/api/v1/forms", json: ["id": "f", "title": script, "introduction": "{{{raw}}}<b>hi</b>", "topics": ["news"]])
            #expect(form.status == .created, "\(form.text)")
            let page = try await api.page(.get, "/f/f")
            #expect(page.status == .ok)
            #expect(!page.text.contains(script) && !page.text.contains("<img src=x") && !page.text.contains("<b>hi</b>"), "\(page.text)")
            #expect(page.text.contains("&lt;script&gt;alert(1)&lt;/script&gt;"))
            // Hostile posts to the form are refused or recorded, never a failure.
            for payload in Self.payloads {
                var encoded = CharacterSet.alphanumerics
                encoded.remove(charactersIn: "+&=")
                let value = payload.addingPercentEncoding(withAllowedCharacters: encoded) ?? ""
                let reply = try await api.page(.post, "/f/f", form: "email=\(value)&name=\(value)&topics=news&locale=\(value)",
                                               headers: [.init("X-Forwarded-For")!: "198.51.100.\(Int.random(in: 1...250))"])
                #expect(reply.status.code < 500, "form post with \(payload.prefix(40)): \(reply.status.code)")
                #expect(!reply.text.contains("<script>alert(1)"))
            }
        }
    }

    /// The other public forms: the portal's sign-in request, the preference centre and one-click unsubscribe
    /// (real links), confirmation and renewal (links that are not real): every field gets every payload.
    @Test(arguments: StoreKind.available)
    func hostileValuesInThePublicPagesFormsAreRefusedOrKeptAndNeverRun(_ kind: StoreKind) async throws {
        var site = SiteConfiguration(formPostsPerMinute: 100_000, linkPostsPerMinute: 100_000)
        site.publicRequestsPerMinute = 100_000
        try await withAPI(kind, site: site) { api in
            try await api.createTopic("news", doubleOptIn: false)
            let id = try await api.createContact("jo@example.com")
            _ = try await api.send(.put, "/api/v1/contacts/\(id)/preferences", json: ["source": "api", "preferences": [["topic": "news", "granted": true]]])
            let links = try await api.send(.get, "/api/v1/contacts/\(id)/links").json
            let centre = try #require(URL(string: links["preferenceCentreUrl"] as? String ?? "")).path
            let unsubscribe = try #require(URL(string: links["unsubscribeUrl"] as? String ?? "")).path
            let fields = ["action", "csrf", "email", "note", "noticeVersion", "shown", "topic", "website", "topics", "news", "List-Unsubscribe"]
            var sent = 0
            for path in ["/portal", centre, unsubscribe, "/confirm/forged", "/r/forged", "/portal/signin/forged", "/portal/preferences", "/portal/erasure"] {
                for payload in Self.payloads {
                    var allowed = CharacterSet.alphanumerics
                    allowed.remove(charactersIn: "+&=")
                    let value = payload.addingPercentEncoding(withAllowedCharacters: allowed) ?? ""
                    let reply = try await api.page(.post, path, form: fields.map { "\($0)=\(value)" }.joined(separator: "&"))
                    sent += 1
                    #expect(reply.status.code < 500, "\(path) with \(payload.prefix(40)): \(reply.status.code)")
                    #expect(!reply.text.contains("<script>alert(1)") && !reply.text.contains("<img src=x"), "\(path) echoed markup")
                }
            }
            // The links still work and the ledger is intact.
            #expect(try await api.page(.get, centre).status == .ok)
            #expect(try await api.ledger.verify().isIntact)
            print("hostile public-page posts (\(kind)): \(sent), none failed")
        }
    }
}
