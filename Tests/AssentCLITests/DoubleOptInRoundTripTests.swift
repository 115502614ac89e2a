import AssentCore
import AssentTestSupport
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Testing

/// A person's double opt-in through the real `assent serve` and a real SMTP
/// server: the email arrives, its link is parsed out and followed.
@Suite(.serialized, .enabled(if: SMTPTestServer.shouldRun, "needs aiosmtpd: run scripts/test"))
struct DoubleOptInRoundTripTests {
    @Test func formOptInEmailLinkAndConfirmationOverSMTP() async throws {
        let smtp = try SMTPTestServer(user: "assent", password: "s3cret")
        defer { smtp.stop() }
        let cli = try CLI()
        let server = try ServerProcess(cli: cli, environment: ["ASSENT_SMTP_URL": "smtp://assent:s3cret@127.0.0.1:\(smtp.port)?starttls=none",
                                                               "ASSENT_MAIL_FROM": "Example Ltd <privacy@example.com>",
                                                               "ASSENT_ORGANISATION": "Example Ltd"])
        defer { server.stop() }
        let token = try #require(server.token)
        #expect(server.output.contains("emails: SMTP 127.0.0.1:\(smtp.port)"))
        let topic = try await server.request("POST", "/api/v1/topics", token: token,
                                             body: ["key": "events", "title": "Events", "requiresDoubleOptIn": true, "notice": "Invitations to our events."])
        #expect(topic.status == 201)
        let created = try await server.request("POST", "/api/v1/contacts", token: token, body: ["email": "jo@example.com", "name": "Jo"])
        let id = try #require((try JSONSerialization.jsonObject(with: created.body) as? [String: Any])?["id"] as? String)
        let put = try await server.request("PUT", "/api/v1/contacts/\(id)/preferences", token: token,
                                           body: ["source": "form", "evidence": ["formId": "signup"], "preferences": [["topic": "events", "granted": true]]])
        #expect(put.status == 200)

        let messages = try await smtp.waitForMessages(1)
        let raw = try #require(messages.first, "the confirmation email arrives over SMTP")
        #expect(raw.contains("From: Example Ltd <privacy@example.com>"))
        let text = try #require(plainTextPart(of: raw))
        #expect(text.contains("Invitations to our events."))
        let link = try #require(text.split(whereSeparator: \.isWhitespace).first { $0.contains("/confirm/") }.map(String.init))
        #expect(link.hasPrefix("http://127.0.0.1:\(server.port)/confirm/"))
        let path = String(link.dropFirst("http://127.0.0.1:\(server.port)".count))

        // A mail scanner's GET changes nothing.
        let shown = try await server.get(path)
        #expect(shown.status == 200 && String(decoding: shown.body, as: UTF8.self).contains("Confirm"))
        let before = try await server.get("/api/v1/check?email=jo%40example.com&topic=events", token: token)
        #expect((try JSONSerialization.jsonObject(with: before.body) as? [String: Any])?["reason"] as? String == "pending")

        let confirmed = try await server.postForm(path, form: "topic=events&scope=selected")
        #expect(confirmed.status == 200)
        let after = try await server.get("/api/v1/check?email=jo%40example.com&topic=events", token: token)
        #expect((try JSONSerialization.jsonObject(with: after.body) as? [String: Any])?["allowed"] as? Bool == true)
        let timeline = try await server.get("/api/v1/contacts/\(id)/timeline", token: token)
        let first = ((try JSONSerialization.jsonObject(with: timeline.body) as? [String: Any])?["items"] as? [[String: Any]])?.first
        #expect(first?["source"] as? String == "email_link" && (first?["evidence"] as? [String: Any])?["ip"] as? String == "127.0.0.1")
        let reused = try await server.postForm(path, form: "topic=events&scope=selected")
        #expect(reused.status == 410)
        // The confirmation is followed by the signed receipt, attached.
        let both = try await smtp.waitForMessages(2)
        #expect(both.count == 2 && both.contains { $0.contains("Subject: Your consent receipt from Example Ltd") && $0.contains("application/jose") })
        server.stop()
        let outbox = try cli.run(["outbox", "list", "--status", "sent"])
        #expect(outbox.stdout.contains("sent  email.confirmation") && outbox.stdout.contains("sent  email.receipt"), "\(outbox.stdout)")
    }
}

extension ServerProcess {
    func postForm(_ path: String, form: String) async throws -> (status: Int, body: Data) {
        var request = URLRequest(url: URL(string: "http://127.0.0.1:\(port)\(path)")!)
        request.httpMethod = "POST"
        request.httpBody = Data(form.utf8)
        request.setValue("application/x-www-form-urlencoded", forHTTPHeaderField: "Content-Type")
        let (data, response) = try await URLSession.shared.data(for: request)
        return ((response as? HTTPURLResponse)?.statusCode ?? 0, data)
    }
}
