import AssentCore
import AssentServer
import AssentStore
import AssentTestSupport
import Foundation
import Hummingbird
import HummingbirdTesting
import Testing

/// The self-service portal over HTTP, on every store.
@Suite struct PortalPageTests {
    /// Asks for a sign-in link for `email` and returns the emailed token.
    func signInToken(_ api: APIHarness, _ email: String) async throws -> String {
        let r = try await api.page(.post, "/portal", form: "email=\(email.replacingOccurrences(of: "@", with: "%40"))&website=")
        #expect(r.status == .ok && r.text.contains("Check your inbox"))
        let item = try #require(try await waitForSignInEmails(api, count: 1).last)
        return try PortalLinkEmail.open(item, masterKey: api.ledger.masterKey).token
    }

    /// The link is made after the answer (so timing reveals nothing): poll for it.
    func waitForSignInEmails(_ api: APIHarness, count: Int) async throws -> [OutboxItem] {
        let deadline = Date().addingTimeInterval(10)
        while true {
            let items = try await api.ledger.store.outboxItems(status: nil, limit: 50).filter { $0.kind == PortalLinkEmail.kind }
            if items.count >= count || Date() > deadline { return items }
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    /// Signs in and returns the session cookie ("assent_portal=...").
    func signIn(_ api: APIHarness, _ email: String) async throws -> String {
        let token = try await signInToken(api, email)
        let r = try await api.page(.post, "/portal/signin/\(token)")
        #expect(r.status == .seeOther && r.headers[.location] == "/portal/home")
        let setCookie = try #require(r.headers[.setCookie])
        return String(setCookie.split(separator: ";")[0])
    }

    func csrf(_ html: String) throws -> String {
        let marker = "name=\"csrf\" value=\""
        let start = try #require(html.range(of: marker)).upperBound
        return String(html[start...].prefix { $0 != "\"" })
    }

    func seed(_ api: APIHarness) async throws -> String {
        try await api.createTopic("events", category: "Events")
        try await api.createTopic("news", category: "News")
        let id = try await api.createContact("ann@example.com")
        _ = try await api.send(.put, "/api/v1/contacts/\(id)/preferences",
                               json: ["source": "staff", "channel": "phone", "evidence": ["note": "Asked for events on the phone."],
                                      "preferences": [["topic": "events", "granted": true]]])
        return id
    }

    @Test(arguments: StoreKind.available)
    func signingInManagingAndSigningOut(_ kind: StoreKind) async throws {
        try await withAPI(kind) { api in
            let id = try await seed(api)
            let token = try await signInToken(api, "ann@example.com")
            // Another site cannot sign a browser in with a link (login CSRF).
            #expect(try await api.page(.post, "/portal/signin/\(token)", headers: [.origin: "https://evil.example"]).status == .forbidden)
            // A GET (a mail scanner) shows a button and does not use the link.
            let shown = try await api.page(.get, "/portal/signin/\(token)")
            #expect(shown.status == .ok && shown.text.contains("<form method=\"post\" action=\"/portal/signin/\(token)\">"))
            let signedIn = try await api.page(.post, "/portal/signin/\(token)")
            let setCookie = try #require(signedIn.headers[.setCookie])
            #expect(setCookie.contains("HttpOnly") && setCookie.contains("SameSite=Strict") && setCookie.contains("Path=/portal") && !setCookie.contains("Secure"))
            let cookie = String(setCookie.split(separator: ";")[0])
            #expect(try await api.page(.post, "/portal/signin/\(token)").status == .gone, "single use")

            let home = try await api.page(.get, "/portal/home", headers: [.cookie: cookie])
            #expect(home.status == .ok)
            #expect(home.text.contains("Signed in as <strong>ann@example.com</strong>"))
            #expect(home.text.contains("You subscribed to Events, as our staff recorded from what you told us (by phone)."))
            let token2 = try csrf(home.text)
            let saved = try await api.page(.post, "/portal/preferences", form: "csrf=\(token2)&shown=events%3A1&shown=news%3A1&topic=news&action=save",
                                           headers: [.cookie: cookie, .origin: "http://127.0.0.1:8080"])
            #expect(saved.status == .ok && saved.text.contains("Your preferences are saved."), "\(saved.text)")
            #expect(saved.text.contains("You unsubscribed from Events, in this portal."))
            let timeline = try await api.send(.get, "/api/v1/contacts/\(id)/timeline").items
            #expect(timeline.prefix(2).map { "\($0["topic"]!):\($0["action"]!):\($0["source"]!)" }.sorted() == ["events:withdrawn:portal", "news:granted:portal"])
            let note = (timeline.first?["evidence"] as? [String: Any])?["note"] as? String ?? ""
            #expect(note.contains("single-use link emailed to ann@example.com"), "the portal's evidence says how the person proved the inbox")

            let export = try await api.page(.get, "/portal/export", headers: [.cookie: cookie])
            #expect(export.status == .ok && export.headers[.contentDisposition]?.hasPrefix("attachment; filename=\"my-data-") == true)
            #expect((export.json["events"] as? [[String: Any]])?.count == 3)
            #expect((export.json["contact"] as? [String: Any])?["email"] as? String == "ann@example.com")

            let erasure = try await api.page(.post, "/portal/erasure", form: "csrf=\(token2)&note=Please+forget+me", headers: [.cookie: cookie])
            #expect(erasure.status == .ok && erasure.text.contains("We have recorded your request to erase your data."))
            let requests = try await api.send(.get, "/api/v1/requests?status=open").items
            #expect(requests.count == 1 && requests.first?["kind"] as? String == "erasure" && requests.first?["note"] as? String == "Please forget me")
            #expect(requests.first?["contactId"] as? String == id && requests.first?["channel"] as? String == "portal")

            let out = try await api.page(.post, "/portal/signout", form: "csrf=\(token2)", headers: [.cookie: cookie])
            #expect(out.status == .seeOther && out.headers[.setCookie]?.contains("Max-Age=0") == true)
            let after = try await api.page(.get, "/portal/home", headers: [.cookie: cookie])
            #expect(after.status == .seeOther && after.headers[.location] == "/portal?ended=1")
        }
    }

    @Test(arguments: StoreKind.available)
    func theAnswerIsTheSameWhetherOrNotTheAddressIsKnown(_ kind: StoreKind) async throws {
        try await withAPI(kind) { api in
            _ = try await seed(api)
            let known = try await api.page(.post, "/portal", form: "email=ann%40example.com&website=")
            let unknown = try await api.page(.post, "/portal", form: "email=stranger%40example.com&website=")
            let bot = try await api.page(.post, "/portal", form: "email=ann%40example.com&website=spam")
            #expect(known.status == unknown.status && known.text == unknown.text && bot.text == known.text)
            #expect(try await waitForSignInEmails(api, count: 1).count == 1)
            try await Task.sleep(for: .milliseconds(200))
            #expect(try await waitForSignInEmails(api, count: 2).count == 1, "nothing for the unknown address or the bot")
            let crossSite = try await api.page(.post, "/portal", form: "email=ann%40example.com&website=", headers: [.origin: "https://evil.example"])
            #expect(crossSite.status == .forbidden)
            let invalid = try await api.page(.post, "/portal", form: "email=nonsense&website=")
            #expect(invalid.status == .unprocessableContent && invalid.text.contains("Enter an email address like name@example.com."))
            #expect(try await api.page(.get, "/portal/signin/not-a-token").status == .notFound)
            #expect(try await api.page(.post, "/portal/signin/not-a-token").status == .notFound)
        }
    }

    @Test(arguments: StoreKind.available)
    func forgedOrCrossSitePostsChangeNothing(_ kind: StoreKind) async throws {
        try await withAPI(kind) { api in
            let id = try await seed(api)
            let cookie = try await signIn(api, "ann@example.com")
            let home = try await api.page(.get, "/portal/home", headers: [.cookie: cookie])
            let token = try csrf(home.text)
            let form = "shown=events%3A1&action=save"
            #expect(try await api.page(.post, "/portal/preferences", form: form, headers: [.cookie: cookie]).status == .forbidden, "no CSRF token")
            #expect(try await api.page(.post, "/portal/preferences", form: "csrf=forged&" + form, headers: [.cookie: cookie]).status == .forbidden)
            #expect(try await api.page(.post, "/portal/preferences", form: "csrf=\(token)&" + form,
                                       headers: [.cookie: cookie, .origin: "https://evil.example"]).status == .forbidden, "another site")
            let noSession = try await api.page(.post, "/portal/preferences", form: "csrf=\(token)&" + form)
            #expect(noSession.status == .seeOther && noSession.headers[.location] == "/portal?ended=1")
            #expect(try await api.page(.post, "/portal/erasure", form: "csrf=forged", headers: [.cookie: cookie]).status == .forbidden)
            #expect(try await api.send(.get, "/api/v1/contacts/\(id)/timeline").items.count == 1)
            #expect(try await api.send(.get, "/api/v1/requests").items.isEmpty)
            #expect(try await api.page(.get, "/portal/export").status == .seeOther)
        }
    }

    @Test func cookiesAreSecureOverHTTPS() async throws {
        try await withAPI(site: SiteConfiguration(publicURL: { "https://consent.example.org" })) { api in
            _ = try await seed(api)
            let token = try await signInToken(api, "ann@example.com")
            let r = try await api.page(.post, "/portal/signin/\(token)")
            #expect(r.headers[.setCookie]?.hasSuffix("; Secure") == true)
        }
    }

    @Test func ipv6ClientsAreCountedByTheirSlash64() async throws {
        let limiter = RateLimiter(limit: 2)
        var allowed: [Bool] = []
        for address in ["2001:db8:1:2::1", "2001:db8:1:2:ffff::9", "2001:db8:1:2::5", "2001:db8:1:3::1", "192.0.2.1", "192.0.2.2"] {
            allowed.append(await limiter.admit(address).allowed)
        }
        #expect(allowed == [true, true, false, true, true, true])
    }

    @Test func aTrustedProxysForwardedAddressIsTheClient() async throws {
        let site = SiteConfiguration(formPostsPerMinute: 2, trustedProxies: ["127.0.0.1", "10.0.0.1"])
        #expect(site.clientAddress(peer: "10.0.0.1", forwardedFor: ["203.0.113.5, 10.0.0.1"]) == "203.0.113.5")
        #expect(site.clientAddress(peer: "198.51.100.9", forwardedFor: ["203.0.113.5"]) == "198.51.100.9", "an untrusted peer cannot claim another address")
        #expect(site.clientAddress(peer: "10.0.0.1", forwardedFor: []) == "10.0.0.1")
        #expect(SiteConfiguration().clientAddress(peer: "10.0.0.1", forwardedFor: ["203.0.113.5"]) == "10.0.0.1")
    }
}
