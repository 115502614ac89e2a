import AssentCore
import AssentStore
import ArgumentParser
import Foundation

struct Import: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Import contacts and their Yes/No per topic from a CSV file (a dry run unless --commit).",
        discussion: """
            The first line names the columns: email (required), name, external_id, locale, occurred_at, and one column per \
            topic (its key, or topic:<key>) holding yes/no (true/false, 1/0; empty: no change). Every row is checked before \
            anything is written; a file with any problem changes nothing. Each change is recorded with source import, the \
            batch id and the evidence statement. Importing the same file again changes nothing.
            """)
    @OptionGroup var store: StoreOptions
    @Argument(help: "The CSV file (UTF-8).") var file: String
    @Option(help: "Where these consents came from and the notice people saw (required; kept as evidence on every event).") var evidence: String
    @Option(name: .customLong("map"), help: "A column mapping: 'Header=field', field one of email, name, external_id, locale, occurred_at, topic:<key>, ignore (repeat).")
    var maps: [String] = []
    @Option(name: .customLong("notice"), help: "The notice version people saw for a topic: 'events=2' (repeat; default the current one).")
    var notices: [String] = []
    @Flag(help: "Write the changes (without it: a dry run that only reports what would change).") var commit = false

    func run() async throws {
        var mapping = ImportMapping()
        for entry in maps {
            let parts = entry.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else { throw ValidationError("--map: '\(entry)' is not Header=field") }
            mapping.columns[parts[0]] = parts[1]
        }
        var versions: [String: Int] = [:]
        for entry in notices {
            let parts = entry.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2, let version = Int(parts[1]) else { throw ValidationError("--notice: '\(entry)' is not topic=version") }
            versions[parts[0]] = version
        }
        guard FileManager.default.isReadableFile(atPath: file) else { throw ValidationError("\(file): no such readable file") }
        let total = ((try? FileManager.default.attributesOfItem(atPath: file))?[.size] as? NSNumber)?.intValue ?? 0
        let ledger = try await store.openLedger()
        var started = Date()
        var writing = false
        var lastShown = Date.distantPast
        let report = try await reportingErrors {
            try await ledger.importContacts({
                guard let handle = FileHandle(forReadingAtPath: file) else { throw ValidationError("\(file): cannot be read") }
                return CSVReader(fileHandle: handle)
            }, mapping: mapping, options: ImportOptions(evidence: evidence, noticeVersions: versions, commit: commit)) { isWriting, rows, bytes in
                let now = Date()
                if isWriting && !writing {
                    writing = true
                    started = now
                    FileHandle.standardError.write(Data("\n".utf8))
                }
                guard now.timeIntervalSince(lastShown) >= 0.2 || bytes >= total else { return }
                lastShown = now
                Self.showProgress(rows: rows, bytes: bytes, total: total, since: started, label: writing ? "writing" : "checking")
            }
        }
        FileHandle.standardError.write(Data("\n".utf8))
        print(report.committed ? "imported batch \(report.batchID)" + (report.problems.isEmpty ? "" : ", with \(report.problems.count) rows refused (below)")
              : (report.problems.isEmpty ? "dry run: nothing was written (add --commit to import)" : "nothing was written"))
        print("\(report.rows) rows: \(report.newContacts) new contacts, \(report.grants) grants, \(report.withdrawals) withdrawals, \(report.unchanged) unchanged, \(report.suppressed.count) suppressed")
        for s in report.suppressed.prefix(50) { print("  line \(s.line): \(s.email) was erased and is suppressed; refused") }
        if report.suppressed.count > 50 { print("  ... and \(report.suppressed.count - 50) more suppressed") }
        if !report.problems.isEmpty {
            for problem in report.problems { FileHandle.standardError.write(Data("\(file): \(problem)\n".utf8)) }
            throw ExitCode(1)
        }
    }

    static func showProgress(rows: Int, bytes: Int, total: Int, since: Date, label: String) {
        let elapsed = max(Date().timeIntervalSince(since), 0.001)
        let fraction = total > 0 ? min(1, Double(bytes) / Double(total)) : 1
        let width = 30, filled = Int(fraction * Double(width))
        let rate = Double(rows) / elapsed
        let eta = fraction > 0 && fraction < 1 ? elapsed / fraction - elapsed : 0
        let bar = String(repeating: "#", count: filled) + String(repeating: "-", count: width - filled)
        FileHandle.standardError.write(Data("\r[\(bar)] \(Int(fraction * 100))% \(rows) rows, \(Int(rate)) rows/s, ETA \(Int(eta.rounded())) s (\(label))   ".utf8))
    }
}
