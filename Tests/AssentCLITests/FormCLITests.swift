import Foundation
import Testing

@Suite(.serialized) struct FormCLITests {
    @Test func formsAreDefinedListedEmbeddedAndRetiredFromTheCommandLine() throws {
        let cli = try CLI()
        for key in ["events", "news"] {
            #expect(try cli.run(["topics", "add", key, "--title", key.capitalized, "--notice", "We email you about \(key)."]).status == 0)
        }
        let added = try cli.run(["forms", "add", "newsletter", "--title", "Stay in touch", "--topic", "events", "--topic", "news:1",
                                 "--allowed-origin", "https://www.example.org", "--ask-name", "--public-url", "https://consent.example.org"])
        #expect(added.status == 0, "\(added.stderr)")
        #expect(added.stdout.contains("served at https://consent.example.org/f/newsletter"))
        #expect(try cli.run(["forms", "list"]).stdout.contains("newsletter  Stay in touch  topics: events, news  [signup, double opt-in, v1]"))
        let shown = try cli.run(["forms", "show", "newsletter"])
        #expect(shown.stdout.contains("topics: events (notice v1), news (notice v1)") && shown.stdout.contains("allowed origins: https://www.example.org"))
        let embed = try cli.run(["forms", "embed", "newsletter"], environment: ["ASSENT_PUBLIC_URL": "https://consent.example.org"])
        #expect(embed.status == 0 && embed.stdout.contains("action=\"https://consent.example.org/f/newsletter\""), "\(embed.stderr)")
        #expect(embed.stdout.contains("We email you about news."))
        #expect(try cli.run(["forms", "retire", "newsletter"]).stdout.contains("retired form newsletter"))
        #expect(try cli.run(["forms", "list"]).stdout.contains("no forms yet"))
        #expect(try cli.run(["forms", "embed", "newsletter"]).stderr.contains("retired"))
    }

    @Test func badFormsAreNamedAndSaveNothing() throws {
        let cli = try CLI()
        #expect(try cli.run(["topics", "add", "events", "--title", "Events", "--notice", "n"]).status == 0)
        let bad = try cli.run(["forms", "add", "x", "--title", "T", "--topic", "nope", "--allowed-origin", "example.org"])
        #expect(bad.status != 0 && bad.stderr.contains("topics[0].key: unknown topic 'nope'") && bad.stderr.contains("allowedOrigins[0]"), "\(bad.stderr)")
        let kind = try cli.run(["forms", "add", "x", "--title", "T", "--topic", "events", "--kind", "survey"])
        #expect(kind.status != 0 && kind.stderr.contains("--kind"))
        #expect(try cli.run(["forms", "list", "--all"]).stdout.contains("no forms yet"))
    }

    @Test func contactLinksPrintTheListUnsubscribeHeadersAndRotate() throws {
        let cli = try CLI()
        #expect(try cli.run(["topics", "add", "news", "--title", "News", "--notice", "n"]).status == 0)
        #expect(try cli.run(["contacts", "add", "ann@example.com"]).status == 0)
        let links = try cli.run(["contacts", "links", "ann@example.com", "--topic", "news", "--public-url", "https://consent.example.org"])
        #expect(links.status == 0, "\(links.stderr)")
        let lines = links.stdout.split(separator: "\n").map(String.init)
        #expect(lines.first?.hasPrefix("preference centre: https://consent.example.org/p/") == true)
        #expect(lines.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click"))
        let again = try cli.run(["contacts", "links", "ann@example.com", "--topic", "news", "--public-url", "https://consent.example.org"])
        #expect(again.stdout == links.stdout, "links are stable")
        let rotated = try cli.run(["contacts", "links", "ann@example.com", "--rotate"])
        #expect(rotated.status == 0 && !rotated.stdout.contains(String(lines[0].split(separator: "/").last!)))
        #expect(try cli.run(["contacts", "links", "ann@example.com", "--topic", "nope"]).stderr.contains("topic 'nope' not found"))
        #expect(try cli.run(["contacts", "links", "bob@example.com"]).stderr.contains("no contact matches"))
    }
}

@Suite(.serialized) struct UserCLITests {
    @Test func serveCreatesTheFirstAdministratorOnceWithAOneTimePassword() async throws {
        let cli = try CLI()
        let first = try ServerProcess(cli: cli)
        #expect(first.output.contains("First start: created the console administrator") && first.output.contains("admin@assent.localhost"))
        #expect(first.output.contains("/console"))
        first.stop()
        let second = try ServerProcess(cli: cli)
        defer { second.stop() }
        #expect(!second.output.contains("console administrator"), "created once")
        let listed = try cli.run(["users", "list"])
        #expect(listed.stdout.contains("admin@assent.localhost  Administrator  admin  active  (must change password)"), "\(listed.stdout)")
    }

    @Test func usersAreAddedListedResetAndDisabledFromTheCommandLine() throws {
        let cli = try CLI()
        let added = try cli.run(["users", "add", "Ana@Example.com", "--name", "Ana Agent", "--role", "agent"])
        #expect(added.status == 0 && added.stdout.contains("added agent ana@example.com (Ana Agent)"), "\(added.stderr)")
        #expect(added.stdout.contains("one-time password: ") && added.stderr.contains("not shown again"))
        let bad = try cli.run(["users", "add", "x@example.com", "--name", "X", "--role", "boss"])
        #expect(bad.status != 0 && bad.stderr.contains("--role"))
        let weak = try cli.run(["users", "add", "y@example.com", "--name", "Y", "--role", "auditor", "--password-stdin"])
        #expect(weak.status != 0 && weak.stderr.contains("--password-stdin"), "no input: \(weak.stderr)")
        let again = try cli.run(["users", "add", "ana@example.com", "--name", "Ana", "--role", "agent"])
        #expect(again.status != 0 && again.stderr.contains("already exists"))
        let reset = try cli.run(["users", "reset-password", "ana@example.com"])
        #expect(reset.status == 0 && reset.stdout.hasPrefix("one-time password: "))
        #expect(try cli.run(["users", "disable", "ana@example.com"]).stdout.contains("disabled ana@example.com"))
        #expect(try cli.run(["users", "list"]).stdout.contains("ana@example.com  Ana Agent  agent  disabled"))
        #expect(try cli.run(["users", "disable", "nobody@example.com"]).stderr.contains("no staff user"))
    }
}

@Suite(.serialized) struct RightsCLITests {
    @Test func exportEraseObjectAndListFromTheCommandLine() throws {
        let cli = try CLI()
        #expect(try cli.run(["topics", "add", "news", "--title", "News", "--notice", "News by email.", "--no-double-opt-in"]).status == 0)
        #expect(try cli.run(["contacts", "add", "jo@example.com", "--name", "Jo"]).status == 0)
        let export = try cli.run(["dsr", "export", "jo@example.com"])
        #expect(export.status == 0 && export.stdout.contains("\"email\" : \"jo@example.com\""), "\(export.stderr)")
        #expect(try cli.run(["dsr", "export", "jo@example.com", "--html"]).stdout.contains("<h1>Personal data held about jo@example.com</h1>"))
        let objected = try cli.run(["dsr", "object", "jo@example.com", "--channel", "letter", "--note", "Letter of 2026-11-20: no marketing."])
        #expect(objected.status == 0 && objected.stdout.contains("objection recorded"), "\(objected.stderr)")
        #expect(try cli.run(["dsr", "erase", "jo@example.com"]).stderr.contains("--reason"))
        let erased = try cli.run(["dsr", "erase", "jo@example.com", "--reason", "Letter of 2026-11-20"])
        #expect(erased.status == 0 && erased.stdout.contains("suppression list"), "\(erased.stderr)")
        #expect(try cli.run(["verify"]).status == 0)
        let again = try cli.run(["contacts", "add", "jo@example.com"])
        #expect(again.status != 0 && again.stderr.contains("suppressed"))
        #expect(try cli.run(["dsr", "list", "--overdue"]).stdout.contains("no overdue requests"))
    }
}

@Suite(.serialized) struct AudienceCLITests {
    @Test func todaysAudienceAndABatchCheckFromTheCommandLine() async throws {
        let cli = try CLI()
        #expect(try cli.run(["topics", "add", "news", "--title", "News", "--notice", "News by email.", "--no-double-opt-in"]).status == 0)
        #expect(try cli.run(["contacts", "add", "jo@example.com", "--name", "Jo"]).status == 0)
        #expect(try cli.run(["contacts", "add", "bo@example.com"]).status == 0)
        #expect(try cli.run(["forms", "add", "join", "--title", "Join", "--topic", "news", "--no-double-opt-in"]).status == 0)
        // Jo opts in through the API of a running server (the CLI records no opt-ins itself).
        let server = try ServerProcess(cli: cli)
        defer { server.stop() }
        let token = try #require(server.token)
        let contacts = try cli.run(["contacts", "show", "jo@example.com"]).stdout
        let id = String(contacts.prefix(36))
        let put = try await server.request("PUT", "/api/v1/contacts/\(id)/preferences", token: token,
                                           body: ["source": "api", "preferences": [["topic": "news", "granted": true]]])
        #expect(put.status == 200)
        server.stop()
        let export = try cli.run(["audience", "export", "--topic", "news", "--public-url", "https://consent.example.org"])
        #expect(export.status == 0, "\(export.stderr)")
        let lines = export.stdout.split(separator: "\r\n").map(String.init)
        #expect(lines.count == 2 && lines[1].hasPrefix("jo@example.com,Jo,,,") && lines[1].contains("https://consent.example.org/u/"))
        #expect(export.stderr.contains("1 contacts in"))
        #expect(try cli.run(["audience", "export", "--topic", "news", "--count"]).stdout == "1\n")
        #expect(try cli.run(["audience", "export", "--topic", "nope"]).stderr.contains("unknown topic 'nope'"))
        #expect(try cli.run(["audience", "export", "--topic", "news", "--format", "xml"]).stderr.contains("--format"))
        #expect(try cli.run(["audience", "export"]).stderr.contains("--topic"))
        let input = cli.directory.appendingPathComponent("emails.txt")
        try "jo@example.com\nbo@example.com\nnew@example.com\n".write(to: input, atomically: true, encoding: .utf8)
        let checked = try cli.run(["audience", "check", "--topic", "news", input.path])
        #expect(checked.stdout == "jo@example.com\tyes\tgranted\nbo@example.com\tno\tnone\nnew@example.com\tno\tunknown\n", "\(checked.stdout)\(checked.stderr)")
        #expect(try cli.run(["audience", "export", "--category", "general", "--count"]).stdout == "1\n", "news is in the default category")

        // Segments: saved, measured at once, listed, shown, exported, removed.
        let saved = try cli.run(["segments", "add", "news-readers", "--name", "News readers", "--topic", "news"])
        #expect(saved.status == 0 && saved.stdout == "saved segment news-readers (News readers): 1 contact(s) today\n", "\(saved.stdout)\(saved.stderr)")
        #expect(try cli.run(["segments", "list"]).stdout.hasPrefix("news-readers  News readers  [topics news]  1 on "))
        let shown = try cli.run(["segments", "show", "news-readers"]).stdout
        #expect(shown.contains("saved by command line") && shown.contains("        1  ########################################"), "\(shown)")
        #expect(try cli.run(["segments", "export", "news-readers", "--count"]).stdout == "1\n")
        let exported = try cli.run(["segments", "export", "news-readers", "--public-url", "https://consent.example.org"])
        #expect(exported.stdout.split(separator: "\r\n").count == 2 && exported.stdout.contains("jo@example.com,Jo,"))
        let refused = try cli.run(["segments", "add", "bad", "--name", "Bad", "--topic", "nope"])
        #expect(refused.status != 0 && refused.stderr.contains("unknown topic 'nope'"))
        #expect(try cli.run(["segments", "remove", "news-readers"]).stdout == "deleted segment news-readers\n")
        #expect(try cli.run(["segments", "list"]).stdout.hasPrefix("no segments yet"))
        let window = try cli.run(["topics", "add", "offers", "--title", "Offers", "--notice", "Offers.", "--lifetime-days", "30", "--repermission-days", "30"])
        #expect(window.status != 0 && window.stderr.contains("repermissionDaysBefore"), "\(window.stderr)")
        #expect(try cli.run(["topics", "add", "offers", "--title", "Offers", "--notice", "Offers.", "--lifetime-days", "730", "--repermission-days", "30"]).status == 0)
        #expect(try cli.run(["topics", "list"]).stdout.contains("lasts 730 days, renewal asked 30 days before"))
    }

}
