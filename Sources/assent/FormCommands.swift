import AssentCore
import AssentServer
import AssentStore
import ArgumentParser
import Foundation

/// The public base URL for links the CLI prints: the flag, ASSENT_PUBLIC_URL, or the local default.
struct PublicURLOption: ParsableArguments {
    @Option(help: ArgumentHelp("Base URL people reach Assent at (env ASSENT_PUBLIC_URL; default http://127.0.0.1:8080).", valueName: "url"))
    var publicURL: String = ProcessInfo.processInfo.environment["ASSENT_PUBLIC_URL"] ?? ""

    var value: String { publicURL.isEmpty ? "http://127.0.0.1:8080" : (publicURL.hasSuffix("/") ? String(publicURL.dropLast()) : publicURL) }

    func validate() throws {
        guard publicURL.isEmpty || (try? WebAddress.checkURL(publicURL, field: "--public-url")) != nil else {
            throw ValidationError("--public-url: '\(publicURL)' must be an http:// or https:// URL")
        }
    }
}

struct Forms: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Manage sign-up and preference forms (served at /f/<id>).",
                                                    subcommands: [Add.self, List.self, Show.self, Embed.self, Retire.self])

    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Define a form: its topics, texts and behaviour.")
        @OptionGroup var store: StoreOptions
        @OptionGroup var site: PublicURLOption
        @Argument(help: "A slug such as newsletter; the form is served at /f/<id>.") var id: String
        @Option(help: "Heading shown on the form.") var title: String
        @Option(name: .customLong("topic"), help: "A topic the form offers (repeat for several; key or key:noticeVersion).") var topics: [String] = []
        @Option(help: "signup (a ticked box opts in) or preferences (shows the person's state; unticking withdraws).") var kind: String = "signup"
        @Option(help: "Text shown above the form.") var introduction: String = ""
        @Flag(inversion: .prefixedNo, help: "Confirm every opt-in by email (default on); off: each topic's own rule applies.") var doubleOptIn = true
        @Flag(help: "Ask for a name (optional for the person).") var askName = false
        @Option(help: "Where the browser goes after a successful post (default: a hosted thank-you page).") var successUrl: String?
        @Option(name: .customLong("allowed-origin"), help: "A website origin allowed to embed and post the form, e.g. https://www.example.org (repeatable).") var allowedOrigins: [String] = []
        @Option(help: "Page language, e.g. en or de (default: the visitor's browser language).") var language: String?

        func run() async throws {
            guard let kind = FormDefinition.Kind(rawValue: kind) else { throw ValidationError("--kind: '\(kind)' must be signup or preferences") }
            let formTopics = try topics.map { text -> FormTopic in
                let parts = text.split(separator: ":", maxSplits: 1).map(String.init)
                guard parts.count == 1 || Int(parts[1]) != nil else { throw ValidationError("--topic: '\(text)' must be a key or key:noticeVersion") }
                return FormTopic(key: parts[0], noticeVersion: parts.count == 2 ? Int(parts[1]) : nil)
            }
            let ledger = try await store.openLedger()
            let form = try await reportingErrors {
                try await ledger.createForm(id: id, definition: FormDefinition(
                    title: title, introduction: introduction, kind: kind, topics: formTopics, doubleOptIn: doubleOptIn, askName: askName,
                    successURL: successUrl, allowedOrigins: allowedOrigins, language: language))
            }
            print("created form \(form.id) version 1, served at \(site.value)/f/\(form.id)")
            print("embed it with: assent forms embed \(form.id)")
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List forms.")
        @OptionGroup var store: StoreOptions
        @Flag(help: "Include retired forms.") var all = false

        func run() async throws {
            let ledger = try await store.openLedger()
            let forms = try await ledger.store.forms(includeRetired: all)
            if forms.isEmpty { print("no forms yet; add one with 'assent forms add'") }
            for f in forms {
                let flags = [f.status == .retired ? "retired" : nil, f.definition.kind.rawValue, f.definition.doubleOptIn ? "double opt-in" : nil,
                             "v\(f.version)"].compactMap { $0 }
                print("\(f.id)  \(f.definition.title)  topics: \(f.definition.topics.map(\.key).joined(separator: ", "))  [\(flags.joined(separator: ", "))]")
            }
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show a form's current (or a given) version.")
        @OptionGroup var store: StoreOptions
        @OptionGroup var site: PublicURLOption
        @Argument var id: String
        @Option(help: "A saved version (default: the current one).") var version: Int?

        func run() async throws {
            let ledger = try await store.openLedger()
            let form = try await reportingErrors { () -> Form in
                guard let version else { return try await ledger.existingForm(id) }
                guard let found = try await ledger.store.form(id: id, version: version) else { throw ValidationError("form '\(id)' has no version \(version)") }
                return found
            }
            let d = form.definition
            print("\(form.id) version \(form.version) (\(form.status.rawValue)), saved \(form.versionCreatedAt.display)")
            print("  page: \(site.value)/f/\(form.id)")
            print("  title: \(d.title)")
            if !d.introduction.isEmpty { print("  introduction: \(d.introduction)") }
            print("  kind: \(d.kind.rawValue); double opt-in: \(d.doubleOptIn ? "yes" : "per topic"); asks name: \(d.askName ? "yes" : "no")")
            print("  topics: " + d.topics.map { "\($0.key) (notice v\($0.noticeVersion ?? 0))" }.joined(separator: ", "))
            if let url = d.successURL { print("  success URL: \(url)") }
            if !d.allowedOrigins.isEmpty { print("  allowed origins: \(d.allowedOrigins.joined(separator: ", "))") }
            if let language = d.language { print("  language: \(language)") }
        }
    }

    struct Embed: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print the HTML to paste into a web page for a form.")
        @OptionGroup var store: StoreOptions
        @OptionGroup var site: PublicURLOption
        @Option(help: "The organisation's name (env ASSENT_ORGANISATION).") var organisation: String = ProcessInfo.processInfo.environment["ASSENT_ORGANISATION"] ?? "Assent"
        @Argument var id: String

        func run() async throws {
            let ledger = try await store.openLedger()
            let form = try await reportingErrors { try await ledger.existingForm(id) }
            guard form.isActive else { throw ValidationError("form '\(id)' is retired") }
            let base = site.value
            print(try await formEmbedHTML(ledger: ledger, form: form, site: SiteConfiguration(publicURL: { base }, organisation: organisation)))
        }
    }

    struct Retire: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Retire a form: its page answers 'no longer available'; its history stays.")
        @OptionGroup var store: StoreOptions
        @Argument var id: String

        func run() async throws {
            let ledger = try await store.openLedger()
            let form = try await reportingErrors { try await ledger.retireForm(id: id) }
            print("retired form \(form.id)")
        }
    }
}

/// Finds a contact by id, email or external id.
func findContact(_ text: String, in ledger: Ledger) async throws -> Contact {
    let found: Contact? = if let id = UUID(uuidString: text) { try await ledger.store.contact(id: id) }
        else if let email = try? EmailAddress(text), let c = try await ledger.store.contact(email: email) { c }
        else { try await ledger.store.contact(externalID: text) }
    guard let contact = found else { throw ValidationError("no contact matches '\(text)'") }
    return contact
}

struct ContactLinks: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "links",
        abstract: "Print a contact's preference-centre and one-click unsubscribe links (and the List-Unsubscribe headers).")
    @OptionGroup var store: StoreOptions
    @OptionGroup var site: PublicURLOption
    @Argument(help: "Contact id, email or external id.") var contact: String
    @Option(help: "Make the unsubscribe link withdraw this topic only (default: every topic).") var topic: String?
    @Flag(help: "Revoke every link sent so far first (new secret).") var rotate = false

    func run() async throws {
        let ledger = try await store.openLedger()
        let c = try await findContact(contact, in: ledger)
        if let topic {
            try await reportingErrors { _ = try await ledger.existingTopic(topic) }
        }
        if rotate {
            try await ledger.rotateLinks(contactID: c.id)
            FileHandle.standardError.write(Data("rotated: every earlier link of \(c.email) stopped working\n".utf8))
        }
        let centre = try await ledger.linkToken(ContactLink(purpose: .preferenceCentre, contactID: c.id))
        let unsubscribe = "\(site.value)/u/" + (try await ledger.linkToken(ContactLink(purpose: .unsubscribe, contactID: c.id, topicKey: topic)))
        print("preference centre: \(site.value)/p/\(centre)")
        print("unsubscribe\(topic.map { " (\($0))" } ?? " (everything)"): \(unsubscribe)")
        print("List-Unsubscribe: <\(unsubscribe)>")
        print("List-Unsubscribe-Post: List-Unsubscribe=One-Click")
    }
}
