import AssentCore
import AssentServer
import AssentStore
import ArgumentParser
import Foundation

struct DSR: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dsr", abstract: "Data-subject rights: export a person's data, erase them, record an objection, list requests.",
        subcommands: [Export.self, Erase.self, Object.self, List.self])

    struct Export: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Everything stored about a person, as JSON (or printable HTML).")
        @OptionGroup var store: StoreOptions
        @OptionGroup var site: PublicURLOption
        @Argument(help: "Contact id, email or external id.") var contact: String
        @Flag(help: "A printable HTML page instead of JSON.") var html = false

        func run() async throws {
            let ledger = try await store.openLedger()
            let c = try await findContact(contact, in: ledger)
            let export = try await ledger.exportPersonalData(contactID: c.id)
            try await ledger.audit(nil, "export_contact", target: "contact:\(c.id.uuidString.lowercased())")
            if html {
                let base = site.value
                print(try await personalDataHTML(export, site: SiteConfiguration(publicURL: { base })))
            } else {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
                // The same timestamps as the API: RFC 3339 with milliseconds.
                encoder.dateEncodingStrategy = .custom { date, encoder in
                    var container = encoder.singleValueContainer()
                    try container.encode(date.formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: true)))
                }
                print(String(decoding: try encoder.encode(export), as: UTF8.self))
            }
        }
    }

    struct Erase: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Erase a person: their personal data and evidence key go; the non-personal record of their consents and a suppression entry stay.")
        @OptionGroup var store: StoreOptions
        @Argument(help: "Contact id, email or external id.") var contact: String
        @Option(help: "Why (e.g. the person's request of 2026-11-29, reference).") var reason: String

        func run() async throws {
            let ledger = try await store.openLedger()
            let c = try await findContact(contact, in: ledger)
            guard !c.isErased else { throw ValidationError("contact \(c.id.uuidString.lowercased()) was already erased") }
            let erased = try await reportingErrors { try await ledger.eraseContact(c.id, reason: reason, erasedBy: "command line") }
            print("erased contact \(erased.id.uuidString.lowercased()); its email is on the suppression list; 'assent verify' still checks its chain")
        }
    }

    struct Object: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Record an objection to all direct marketing: every topic is withdrawn and only the person can opt in again.")
        @OptionGroup var store: StoreOptions
        @Argument(help: "Contact id, email or external id.") var contact: String
        @Option(help: "How the person told you: phone, in_person, letter or email.") var channel: String
        @Option(help: "What they said.") var note: String

        func run() async throws {
            guard let channel = StaffChannel(rawValue: channel) else { throw ValidationError("--channel: '\(channel)' must be phone, in_person, letter or email") }
            let ledger = try await store.openLedger()
            let c = try await findContact(contact, in: ledger)
            let result = try await reportingErrors {
                try await ledger.objectToMarketing(c.id, source: .staff, channel: channel, actor: .staff("command line"),
                                                   evidence: Evidence(personal: PersonalEvidence(note: note)))
            }
            print("objection recorded for \(c.email.value); withdrew: \(result.events.map(\.topicKey).joined(separator: ", ").isEmpty ? "nothing (no topic was Yes)" : result.events.map(\.topicKey).joined(separator: ", "))")
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Data-subject requests, soonest due first.")
        @OptionGroup var store: StoreOptions
        @Flag(help: "Only open requests past their due date.") var overdue = false
        @Flag(help: "Closed requests too.") var all = false

        func run() async throws {
            let ledger = try await store.openLedger()
            let now = Date()
            var requests = try await ledger.store.subjectRequests(contactID: nil, status: all ? nil : .open, limit: 10_000).sorted { $0.dueAt < $1.dueAt }
            if overdue { requests = requests.filter { $0.status == .open && $0.dueAt < now } }
            if requests.isEmpty { print(overdue ? "no overdue requests" : "no requests") }
            for r in requests {
                let flag = r.status == .open && r.dueAt < now ? "OVERDUE" : r.status == .open && r.dueAt < now.addingTimeInterval(7 * 86_400) ? "due this week" : r.status.rawValue
                print("\(r.dueAt.display)  \(r.kind.rawValue)  \(flag)  contact \(r.contactID.uuidString.lowercased())  made \(r.createdAt.display) via \(r.channel)\(r.outcome.map { "  \($0)" } ?? "")")
            }
        }
    }
}
