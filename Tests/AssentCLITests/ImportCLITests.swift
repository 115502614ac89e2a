import Foundation
import Testing

@Suite(.serialized) struct ImportCLITests {
    static var sample: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("examples/contacts.csv")
    }

    @Test func theShippedSampleImportsWithADryRunThenForRealAndExportsBack() throws {
        let cli = try CLI()
        for (key, title) in [("events", "Events"), ("residential-property", "Residential property")] {
            #expect(try cli.run(["topics", "add", key, "--title", title, "--notice", "About \(title).", "--no-double-opt-in"]).status == 0)
        }
        let evidence = "CRM export of 2026-11-01; paper and web sign-up forms, notice v1"
        let dry = try cli.run(["import", Self.sample.path, "--evidence", evidence])
        #expect(dry.status == 0, "\(dry.stderr)")
        #expect(dry.stdout.hasPrefix("dry run: nothing was written (add --commit to import)\n40 rows: "), "\(dry.stdout)")
        #expect(dry.stderr.contains("100% 40 rows") && dry.stderr.contains("rows/s, ETA"), "a progress bar with rate and ETA: \(dry.stderr)")
        #expect(try cli.run(["audience", "export", "--topic", "events", "--count"]).stdout == "0\n", "a dry run writes nothing")
        let real = try cli.run(["import", Self.sample.path, "--evidence", evidence, "--commit"])
        #expect(real.status == 0 && real.stdout.hasPrefix("imported batch import-"), "\(real.stdout)\(real.stderr)")
        let counts = dry.stdout.split(separator: "\n")[1]
        #expect(real.stdout.split(separator: "\n")[1] == counts, "the dry run said what the import did: \(counts)")
        let granted = Int(try cli.run(["audience", "export", "--topic", "events", "--count"]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1
        let expectedYes = try String(contentsOf: Self.sample, encoding: .utf8).split(separator: "\r\n").dropFirst()
            .filter { line in line.split(separator: ",", omittingEmptySubsequences: false).reversed()[2] == "yes" }.count
        #expect(granted == expectedYes && granted > 0, "every yes for events in the file is a grant")
        let again = try cli.run(["import", Self.sample.path, "--evidence", evidence, "--commit"])
        #expect(again.stdout.contains("0 new contacts, 0 grants, 0 withdrawals"), "a re-run changes nothing: \(again.stdout)")

        let bad = cli.directory.appendingPathComponent("bad.csv")
        try "email,events,colour\nx@example.com,perhaps,blue\n".write(to: bad, atomically: true, encoding: .utf8)
        let refused = try cli.run(["import", bad.path, "--evidence", evidence, "--commit"])
        #expect(refused.status != 0 && refused.stderr.contains("column 3") && refused.stderr.contains("'colour' is neither a contact field nor a topic"), "\(refused.stderr)")
        let mapped = try cli.run(["import", bad.path, "--evidence", evidence, "--map", "colour=ignore"])
        #expect(mapped.status != 0 && mapped.stderr.contains("line 2, column 2: 'perhaps' for events is neither yes nor no"), "\(mapped.stderr)")
        #expect(try cli.run(["import", bad.path]).stderr.contains("--evidence"), "the evidence statement is required")

        let events = try cli.run(["export", "events", "--format", "ndjson"])
        let lines = events.stdout.split(separator: "\n")
        let numbers = counts.split(separator: " ").compactMap { Int($0.trimmingCharacters(in: .punctuationCharacters)) } // rows, new, grants, withdrawals, ...
        #expect(events.status == 0 && numbers.count >= 4 && lines.count == numbers[2] + numbers[3], "one event per grant and withdrawal: \(counts)")
        #expect(lines.allSatisfy { $0.contains("\"source\":\"import\"") && $0.contains("\"batch_id\":\"import-") }, "every event came from the import")
        let contacts = try cli.run(["export", "contacts", "--output", cli.directory.appendingPathComponent("c.csv").path])
        #expect(contacts.status == 0 && contacts.stderr.contains("contacts rows in"))
        let written = try String(contentsOf: cli.directory.appendingPathComponent("c.csv"), encoding: .utf8)
        #expect(written.hasPrefix("id,email,name,external_id,locale,created_at,updated_at,erased_at,objected_at\r\n") && written.range(of: #","[A-Za-z']+, [A-Za-z]+",crm-10"#, options: .regularExpression) != nil, "a quoted name survives: \(written.prefix(400))")
        let preferences = try cli.run(["export", "preferences"])
        #expect(preferences.stdout.split(separator: "\r\n").dropFirst().allSatisfy { $0.contains(",granted,") || $0.contains(",withdrawn,") })
        let badKind = try cli.run(["export", "everything"])
        #expect(badKind.status != 0 && badKind.stderr.contains("everything") && badKind.stdout.isEmpty, "\(badKind.stderr)")
        let badFormat = try cli.run(["export", "events", "--format", "xml"])
        #expect(badFormat.status != 0 && badFormat.stderr.contains("--format") && badFormat.stdout.isEmpty, "\(badFormat.stderr)")
        #expect(try cli.run(["export", "events", "--output", "/nonexistent-dir/e.csv"]).stderr.contains("--output: cannot write"))

        // An output that is a symbolic link is written through, and stays a link (so a device such
        // as /dev/null, or a named pipe, is written to, not replaced by a plain file).
        let target = cli.directory.appendingPathComponent("target.csv"), link = cli.directory.appendingPathComponent("link.csv")
        // Far longer than the export, so that only emptying the file first leaves none of it.
        try String(repeating: "stale rows that must go\n", count: 20_000).write(to: target, atomically: false, encoding: .utf8)
        try FileManager.default.createSymbolicLink(at: link, withDestinationURL: target)
        let linked = try cli.run(["export", "contacts", "--output", link.path])
        #expect(linked.status == 0, "\(linked.stderr)")
        #expect((try? FileManager.default.destinationOfSymbolicLink(atPath: link.path)) == target.path, "the link is still a link")
        let throughLink = try String(contentsOf: target, encoding: .utf8)
        #expect(throughLink.hasPrefix("id,email,name,") && !throughLink.contains("stale"), "the link's target holds the export alone: \(throughLink.prefix(200))")
        let mode = (try FileManager.default.attributesOfItem(atPath: cli.directory.appendingPathComponent("c.csv").path)[.posixPermissions] as? Int) ?? 0
        #expect(mode & 0o077 == 0, "a new export file is readable by its owner only: \(String(mode, radix: 8))")
    }
}
