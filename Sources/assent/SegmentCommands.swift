import AssentCore
import AssentServer
import AssentStore
import ArgumentParser
import Foundation

struct Segments: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Saved, named audiences: their definition is kept, their members are today's whenever exported; sizes are measured daily.",
        subcommands: [Add.self, List.self, Show.self, Export.self, Measure.self, Remove.self])

    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Save a segment.")
        @OptionGroup var store: StoreOptions
        @Argument(help: "A slug such as events-de.") var id: String
        @Option(help: "The name staff see.") var name: String
        @Option(help: "What it is for.") var description: String = ""
        @Option(name: .customLong("topic"), help: "A topic (repeat for several).") var topics: [String] = []
        @Option(name: .customLong("category"), help: "Every active topic of this category, now and later (repeat for several).") var categories: [String] = []
        @Flag(help: "Everyone must have granted every topic (default: any of them).") var all = false
        @Option(help: "Only contacts of this language (de also matches de-AT).") var locale: String?

        func run() async throws {
            let ledger = try await store.openLedger()
            let segment = try await reportingErrors {
                try await ledger.createSegment(id: id, name: name, description: description,
                                               query: AudienceQuery(topics: topics, categories: categories, match: all ? .all : .any, locale: locale),
                                               createdBy: "command line")
            }
            try await ledger.audit(nil, "segment_create", target: "segment:\(segment.id)")
            let size = try await reportingErrors { try await ledger.measureSegment(segment) }
            print("saved segment \(segment.id) (\(segment.name)): \(size.size) contact(s) today")
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List segments with their latest size.")
        @OptionGroup var store: StoreOptions

        func run() async throws {
            let ledger = try await store.openLedger()
            let segments = try await ledger.store.segments()
            if segments.isEmpty { print("no segments yet; save one with 'assent segments add'") }
            for s in segments {
                let latest = try await ledger.store.segmentSizes(segmentID: s.id, limit: 1).last
                print("\(s.id)  \(s.name)  [\(Self.describe(s.query))]  \(latest.map { "\($0.size) on \($0.day)" } ?? "not measured yet")")
            }
        }

        static func describe(_ q: AudienceQuery) -> String {
            var parts: [String] = []
            if !q.topics.isEmpty { parts.append("topics " + q.topics.joined(separator: q.match == .all ? " and " : " or ")) }
            if !q.categories.isEmpty { parts.append("categories " + q.categories.joined(separator: ", ")) }
            if let locale = q.locale { parts.append("language \(locale)") }
            if let since = q.createdSince { parts.append("created since \(since.display)") }
            if let since = q.changedSince { parts.append("granted since \(since.display)") }
            return parts.joined(separator: "; ")
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "A segment's definition and its size per day.")
        @OptionGroup var store: StoreOptions
        @Argument var id: String
        @Option(help: "How many days of history.") var days: Int = 30

        func run() async throws {
            let ledger = try await store.openLedger()
            let s = try await reportingErrors { try await ledger.existingSegment(id) }
            print("\(s.id)  \(s.name)\n  \(List.describe(s.query))\n  saved by \(s.createdBy) on \(s.createdAt.display)")
            if !s.description.isEmpty { print("  \(s.description)") }
            let sizes = try await ledger.store.segmentSizes(segmentID: s.id, limit: max(1, days))
            let widest = max(1, sizes.map(\.size).max() ?? 1)
            for size in sizes {
                print("  \(size.day)  \(String(repeating: " ", count: max(0, 9 - String(size.size).count)))\(size.size)  \(String(repeating: "#", count: size.size * 40 / widest))")
            }
            if sizes.isEmpty { print("  not measured yet: 'assent segments measure \(s.id)' or wait for a running server") }
        }
    }

    struct Export: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Stream a segment's audience today as CSV or NDJSON, like 'audience export'.")
        @OptionGroup var store: StoreOptions
        @OptionGroup var site: PublicURLOption
        @Argument var id: String
        @Option(help: "csv or ndjson.") var format: String = "csv"
        @Option(help: "Write to this file instead of standard output.") var output: String?
        @Flag(help: "Only print how many.") var count = false

        func run() async throws {
            let ledger = try await store.openLedger()
            let segment = try await reportingErrors { try await ledger.existingSegment(id) }
            try await AudienceWriter(format: format, output: output, countOnly: count, base: site.value).write(segment.query, ledger: ledger)
        }
    }

    struct Measure: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Count a segment now and record it as today's size.")
        @OptionGroup var store: StoreOptions
        @Argument var id: String

        func run() async throws {
            let ledger = try await store.openLedger()
            let size = try await reportingErrors { try await ledger.measureSegment(try await ledger.existingSegment(id)) }
            print("\(id): \(size.size) contact(s) on \(size.day)")
        }
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete a segment and its size history (nobody's consent changes).")
        @OptionGroup var store: StoreOptions
        @Argument var id: String

        func run() async throws {
            let ledger = try await store.openLedger()
            try await reportingErrors { try await ledger.deleteSegment(id: id) }
            try await ledger.audit(nil, "segment_delete", target: "segment:\(id)")
            print("deleted segment \(id)")
        }
    }
}
