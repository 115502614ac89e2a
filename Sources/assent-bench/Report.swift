import AssentCore
import Foundation

/// The machine a run was on, as BENCHMARKS.md states it.
struct Machine: Codable {
    var cpu: String
    var cores: Int
    var memoryGiB: Int
    var kernel: String
    var swift: String

    var summary: String { "\(cores) cores (\(cpu)), \(memoryGiB) GiB, Linux \(kernel)" }

    static func describe() -> Machine {
        let cpuinfo = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        let model = cpuinfo.split(separator: "\n").first { $0.hasPrefix("model name") }?.split(separator: ":", maxSplits: 1).last?
            .trimmingCharacters(in: .whitespaces) ?? "unknown CPU"
        let kernel = (try? String(contentsOfFile: "/proc/sys/kernel/osrelease", encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "?"
        #if compiler(>=6.3)
        let swift = "6.3"
        #elseif compiler(>=6.2)
        let swift = "6.2"
        #else
        let swift = "older than 6.2"
        #endif
        return Machine(cpu: model, cores: ProcessInfo.processInfo.activeProcessorCount,
                       memoryGiB: Int((Double(ProcessInfo.processInfo.physicalMemory) / Double(1 << 30)).rounded()), kernel: kernel, swift: swift)
    }
}

struct Report: Codable {
    var date: Date
    var machine: Machine
    var settings: Settings
    var eventBytes: Int
    var stores: [StoreRun]

    static let ceilingNames: [(String, String)] = [
        ("H", "the same server's /healthz, requests/s under the same wrk load, run before and after each round of scenario 1 (the mean of the two around the round reported)"),
        ("R", "raw point selects by a unique key, per second (SQLite, here and in W and I: set up as Assent sets it up, memory statistics off; one prepared statement; PostgreSQL: postgres-nio's extended protocol, one connection)"),
        ("W", "raw single-row insert-and-commit, same durability as Assent (SQLite: WAL, synchronous=FULL), per second"),
        ("S", "SHA-256 over event-sized inputs, per second (one core)"),
        ("I", "an import's own rows (contact, key, link secret, 3 events, 3 preferences, chain head), nothing computed, written into "
            + "Assent's schema at the same durability (SQLite: through its C API, 500 contacts per transaction pair; PostgreSQL: psql's COPY, "
            + "all in one transaction); events/s"),
        ("Q", "the single check's own query answered by PostgreSQL to pgbench (a separate process), as many clients as wrk's connections, "
            + "prepared statements; queries/s (PostgreSQL only)"),
    ]

    static func format(_ value: Double) -> String {
        if value >= 100 { return Int(value.rounded()).formatted(.number.grouping(.automatic)).replacingOccurrences(of: "\u{202F}", with: ",") }
        if value >= 10 { return String(format: "%.1f", value) }
        return String(format: "%.2f", value)
    }

    /// The table printed at the end of a run.
    func table() -> String {
        var out = "\nAssent benchmark, \(UTCTime.rfc3339(date, milliseconds: false)), \(machine.summary)\n"
        out += "\(settings.contacts) contacts x 3 topics, seed \(settings.seed), \(settings.duration) s per load run (scenario 1's and H's: \(settings.roundSeconds) s), \(settings.connections) connections"
            + (settings.smoke ? " (SMOKE: tiny sizes, figures mean nothing)" : "") + "\n"
        for run in stores {
            out += "\n\(run.store), \(run.contacts) contacts\n  ceilings: " + Self.ceilingNames.map { "\($0.0) \(run.ceilings[$0.0].map(Self.format) ?? "-")" }.joined(separator: ", ") + "\n"
            for f in run.figures {
                let ratio = f.ratio.map { "\(Self.format($0)) x \(f.ceiling!)" } ?? ""
                out += "  \(f.id). \(f.name)\n       \(Self.format(f.value)) \(f.unit)  \(ratio)  target \(f.target): \(f.met ? "met" : "MISSED")"
                    + (f.note.map { "  (\($0))" } ?? "") + "\n"
            }
        }
        return out
    }

    func json() throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        encoder.dateEncodingStrategy = .custom { date, encoder in
            var c = encoder.singleValueContainer()
            try c.encode(UTCTime.rfc3339(date, milliseconds: false))
        }
        return try encoder.encode(self)
    }

    func markdown() -> String {
        var out = """
            # Benchmarks

            The latest run of `scripts/bench` (the README says how to run it). Every figure comes
            with its target and, where one applies, its ratio to a ceiling measured **in the same
            run** on the same machine, so the ratios hold on a noisy machine.

            - Run: \(UTCTime.rfc3339(date, milliseconds: false)), \(settings.smoke ? "SMOKE run of a debug build (figures mean nothing)" : "release build"), Swift \(machine.swift)
            - Machine: \(machine.summary)
            - Data: \(stores.map { "\($0.contacts) contacts on \($0.store)" }.joined(separator: ", ")), 3 topics each (all granted), seed \(settings.seed); load: wrk, 2 threads,
              \(settings.connections) connections, \(settings.duration) s per run (scenario 1's and H's: \(settings.roundSeconds) s), on loopback
            - An event's canonical form (what is hashed) is \(eventBytes) bytes


            """
        out += "Ceilings:\n\n| | ceiling | " + stores.map(\.store).joined(separator: " | ") + " |\n|---|---|" + stores.map { _ in "---:|" }.joined() + "\n"
        for (letter, meaning) in Self.ceilingNames {
            out += "| \(letter) | \(meaning) | " + stores.map { $0.ceilings[letter].map(Self.format) ?? "-" }.joined(separator: " | ") + " |\n"
        }
        for run in stores {
            out += "\n## \(run.store), \(run.contacts) contacts x 3 topics\n\n| # | scenario | result | vs ceiling | target | |\n|---|---|---:|---:|---|---|\n"
            for f in run.figures {
                out += "| \(f.id) | \(f.name) | \(Self.format(f.value)) \(f.unit) | \(f.ratio.map { "\(Self.format($0)) x \(f.ceiling!)" } ?? "") "
                    + "| \(f.target) | \(f.met ? "met" : "**missed**") |\n"
            }
            let notes = run.figures.compactMap { f in f.note.map { "- \(f.id): \($0)" } }
            if !notes.isEmpty { out += "\n" + notes.joined(separator: "\n") + "\n" }
        }
        return out
    }
}
