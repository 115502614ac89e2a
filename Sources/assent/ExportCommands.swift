import AssentCore
import AssentStore
import ArgumentParser
import Foundation

struct Export: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Stream every contact, preference or event as CSV or NDJSON, for a data warehouse.",
        discussion: """
            Contacts (erased ones with empty personal fields), preferences (the current state per contact and topic) or \
            events (the whole ledger, in each contact's order, with hashes; personal evidence stays sealed and is left out). \
            Memory stays flat whatever the size; progress goes to standard error.
            """)
    @OptionGroup var store: StoreOptions
    @Argument(help: "contacts, preferences or events.") var kind: ExportKind
    @Option(help: "csv or ndjson.") var format: ExportFormat = .csv
    @Option(help: "Write to this file instead of standard output.") var output: String?

    func run() async throws {
        let ledger = try await store.openLedger()
        let sink = try outputSink(output)
        let started = Date()
        let rows = try await ledger.export(kind, format: format) { text, rows in
            sink.write(Data(text.utf8))
            let rate = Double(rows) / max(Date().timeIntervalSince(started), 0.001)
            FileHandle.standardError.write(Data("\r\(rows) rows, \(Int(rate))/s".utf8))
        }
        FileHandle.standardError.write(Data("\r\(rows) \(kind.rawValue) rows in \(String(format: "%.1f", Date().timeIntervalSince(started))) s\(output.map { " -> \($0)" } ?? "")\n".utf8))
        if output != nil { try sink.close() }
    }
}

extension ExportKind: ExpressibleByArgument {}
extension ExportFormat: ExpressibleByArgument {}
