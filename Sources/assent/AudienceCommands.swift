import AssentCore
import AssentServer
import AssentStore
import ArgumentParser
import Foundation

struct Audience: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Who may be sent some topics now.", subcommands: [Export.self, Check.self])

    struct Export: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Stream today's audience as CSV or NDJSON (to standard output or --output), with progress on standard error.")
        @OptionGroup var store: StoreOptions
        @OptionGroup var site: PublicURLOption
        @Option(name: .customLong("topic"), help: "A topic (repeat for several).") var topics: [String] = []
        @Flag(help: "Everyone must have granted every topic (default: any of them).") var all = false
        @Option(help: "csv or ndjson.") var format: String = "csv"
        @Option(help: "Only contacts of this language (de also matches de-AT).") var locale: String?
        @Option(help: "Write to this file instead of standard output.") var output: String?
        @Flag(help: "Only print how many.") var count = false

        @Option(name: .customLong("category"), help: "Every active topic of this category (repeat for several).") var categories: [String] = []

        func run() async throws {
            guard !topics.isEmpty || !categories.isEmpty else { throw ValidationError("--topic: name at least one topic (or --category)") }
            let ledger = try await store.openLedger()
            let query = AudienceQuery(topics: topics, categories: categories, match: all ? .all : .any, locale: locale)
            try await AudienceWriter(format: format, output: output, countOnly: count, base: site.value).write(query, ledger: ledger)
        }
    }

    struct Check: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "May these addresses be sent a topic? One answer per line of an input file (or standard input).")
        @OptionGroup var store: StoreOptions
        @Option(help: "The topic.") var topic: String
        @Argument(help: "A file of email addresses, one per line (default: standard input).") var file: String?

        func run() async throws {
            let text = try file.map { try String(contentsOfFile: $0, encoding: .utf8) } ?? String(decoding: FileHandle.standardInput.readDataToEndOfFile(), as: UTF8.self)
            let lines = text.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
            var emails: [EmailAddress] = []
            for (i, line) in lines.enumerated() {
                do { emails.append(try EmailAddress(line)) } catch { throw ValidationError("line \(i + 1): '\(line.prefix(80))' is not an email address") }
            }
            let ledger = try await store.openLedger()
            for start in stride(from: 0, to: emails.count, by: Ledger.batchCheckLimit) {
                let chunk = Array(emails[start..<min(start + Ledger.batchCheckLimit, emails.count)])
                let results = try await reportingErrors { try await ledger.check(emails: chunk, topicKey: topic) }
                for (email, result) in zip(chunk, results) { print("\(email.value)\t\(result.allowed ? "yes" : "no")\t\(result.reason.rawValue)") }
            }
        }
    }
}

/// Streams an audience to standard output or a file with progress on
/// standard error (or prints its size): `audience export` and `segments export`.
struct AudienceWriter {
    var format: String
    var output: String?
    var countOnly: Bool
    var base: String

    func write(_ definition: AudienceQuery, ledger: Ledger) async throws {
        guard ["csv", "ndjson"].contains(format) else { throw ValidationError("--format: '\(format)' must be csv or ndjson") }
        let query = try await reportingErrors { try await ledger.validate(definition) }
        if countOnly {
            var n = 0
            try await ledger.audience(query) { n += $0.count }
            print(n)
            return
        }
        let sink = try outputSink(output)
        let started = Date()
        var written = 0
        if format == "csv" { sink.write(Data((AudienceRows.csvHeader(query) + "\r\n").utf8)) }
        try await AudienceRows.stream(query, ledger: ledger, base: base, format: format) { rows in
            sink.write(Data(rows))
            // A row per line: no field holds a line break (names refuse control characters).
            written += rows.reduce(0) { $0 + ($1 == 10 ? 1 : 0) }
            let rate = Double(written) / max(Date().timeIntervalSince(started), 0.001)
            FileHandle.standardError.write(Data("\r\(written) contacts, \(Int(rate))/s".utf8))
        }
        FileHandle.standardError.write(Data("\r\(written) contacts in \(String(format: "%.1f", Date().timeIntervalSince(started))) s\(output.map { " -> \($0)" } ?? "")\n".utf8))
        if output != nil { try sink.close() }
    }
}
