import AssentCore
import AssentMail
import AssentPostgres
import AssentServer
import AssentSQLite
import AssentStore
import AssentWebhooks
import ArgumentParser
import Foundation
import Hummingbird
import NIOCore
import NIOPosix
import Logging

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the HTTP API (migrates the database first).")

    @OptionGroup var store: StoreOptions
    @OptionGroup var mail: MailOptions

    @Option(help: ArgumentHelp("Address to listen on (env ASSENT_HOST).", valueName: "host"))
    var host: String = ProcessInfo.processInfo.environment["ASSENT_HOST"] ?? "127.0.0.1"

    @Option(help: ArgumentHelp("Port to listen on; 0 picks a free one (env ASSENT_PORT).", valueName: "port"))
    var port: Int = Int(ProcessInfo.processInfo.environment["ASSENT_PORT"] ?? "") ?? 8080

    @Option(help: ArgumentHelp("trace, debug, info, notice, warning, error or critical (env ASSENT_LOG_LEVEL).", valueName: "level"))
    var logLevel: String = ProcessInfo.processInfo.environment["ASSENT_LOG_LEVEL"] ?? "info"
    @Option(help: ArgumentHelp("Log lines as text, or as one JSON object per line for a log collector (env ASSENT_LOG_FORMAT).", valueName: "text|json"))
    var logFormat: String = ProcessInfo.processInfo.environment["ASSENT_LOG_FORMAT"] ?? "text"

    @Option(help: ArgumentHelp("Form posts accepted per client address per minute (env ASSENT_FORM_POSTS_PER_MINUTE).", valueName: "n"))
    var formPostsPerMinute: Int = Int(ProcessInfo.processInfo.environment["ASSENT_FORM_POSTS_PER_MINUTE"] ?? "") ?? 20

    @Option(help: ArgumentHelp("Preference-centre and unsubscribe posts per client address per minute (env ASSENT_LINK_POSTS_PER_MINUTE).", valueName: "n"))
    var linkPostsPerMinute: Int = Int(ProcessInfo.processInfo.environment["ASSENT_LINK_POSTS_PER_MINUTE"] ?? "") ?? 60

    @Option(help: ArgumentHelp("Requests of any kind to the public pages (forms, links, confirmation, portal) per client address per minute (env ASSENT_PUBLIC_REQUESTS_PER_MINUTE).", valueName: "n"))
    var publicRequestsPerMinute: Int = Int(ProcessInfo.processInfo.environment["ASSENT_PUBLIC_REQUESTS_PER_MINUTE"] ?? "") ?? 300

    @Option(help: ArgumentHelp("API requests with a missing or wrong key per client address per minute before the address gets 429 (env ASSENT_FAILED_AUTH_PER_MINUTE).", valueName: "n"))
    var failedAuthPerMinute: Int = Int(ProcessInfo.processInfo.environment["ASSENT_FAILED_AUTH_PER_MINUTE"] ?? "") ?? 30

    @Option(help: ArgumentHelp("Seconds a connection may wait for a complete request head before it is closed (env ASSENT_HEADER_TIMEOUT_SECONDS).", valueName: "seconds"))
    var headerTimeout: Double = Double(ProcessInfo.processInfo.environment["ASSENT_HEADER_TIMEOUT_SECONDS"] ?? "") ?? 30

    @Option(help: ArgumentHelp("Seconds a request body may take to arrive after its head before the connection is closed (env ASSENT_BODY_TIMEOUT_SECONDS).", valueName: "seconds"))
    var bodyTimeout: Double = Double(ProcessInfo.processInfo.environment["ASSENT_BODY_TIMEOUT_SECONDS"] ?? "") ?? 120

    @Option(help: ArgumentHelp("Hours between the server's verifications of every hash chain, reported at /metrics; 0 = never (env ASSENT_VERIFY_EVERY_HOURS).", valueName: "hours"))
    var verifyEveryHours: Double = Double(ProcessInfo.processInfo.environment["ASSENT_VERIFY_EVERY_HOURS"] ?? "") ?? 24

    @Option(help: ArgumentHelp("Email of the console administrator created on first start (env ASSENT_ADMIN_EMAIL).", valueName: "email"))
    var adminEmail: String = ProcessInfo.processInfo.environment["ASSENT_ADMIN_EMAIL"] ?? "admin@assent.localhost"

    @Option(help: ArgumentHelp("Time zone the staff console shows times in and reads entered times in, e.g. Europe/Berlin (env ASSENT_CONSOLE_TIME_ZONE).", valueName: "zone"))
    var consoleTimeZone: String = ProcessInfo.processInfo.environment["ASSENT_CONSOLE_TIME_ZONE"] ?? "UTC"

    @Option(name: .customLong("trusted-proxy"), help: ArgumentHelp("Address of a reverse proxy whose X-Forwarded-For is believed, for rate limits and evidence (repeatable; env ASSENT_TRUSTED_PROXIES, comma-separated).", valueName: "ip"))
    var trustedProxies: [String] = (ProcessInfo.processInfo.environment["ASSENT_TRUSTED_PROXIES"] ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }

    func validate() throws {
        guard (0...65535).contains(port) else { throw ValidationError("--port: \(port) is not a port number (0-65535)") }
        guard TimeZone(identifier: consoleTimeZone) != nil else { throw ValidationError("--console-time-zone: '\(consoleTimeZone)' is not a time zone such as UTC or Europe/Berlin") }
        guard (1...100_000).contains(formPostsPerMinute) else { throw ValidationError("--form-posts-per-minute: must be from 1 to 100000") }
        guard (1...100_000).contains(linkPostsPerMinute) else { throw ValidationError("--link-posts-per-minute: must be from 1 to 100000") }
        guard Logger.Level(rawValue: logLevel) != nil else { throw ValidationError("--log-level: '\(logLevel)' is not a log level") }
        guard (1...1_000_000).contains(publicRequestsPerMinute) else { throw ValidationError("--public-requests-per-minute: must be from 1 to 1000000") }
        guard (1...100_000).contains(failedAuthPerMinute) else { throw ValidationError("--failed-auth-per-minute: must be from 1 to 100000") }
        guard headerTimeout >= 0.1 && headerTimeout <= 3_600 else { throw ValidationError("--header-timeout: must be from 0.1 to 3600 seconds") }
        guard bodyTimeout >= 0.1 && bodyTimeout <= 86_400 else { throw ValidationError("--body-timeout: must be from 0.1 to 86400 seconds") }
        guard verifyEveryHours >= 0 && verifyEveryHours <= 24 * 366 else { throw ValidationError("--verify-every-hours: must be from 0 (never) to 8784") }
        guard ["text", "json"].contains(logFormat) else { throw ValidationError("--log-format: '\(logFormat)' is not text or json") }
        _ = try Self.tasksOnEventLoops()
    }

    /// `ASSENT_TASKS_ON_EVENT_LOOPS` (default true).
    static func tasksOnEventLoops() throws -> Bool {
        switch ProcessInfo.processInfo.environment["ASSENT_TASKS_ON_EVENT_LOOPS"]?.lowercased() ?? "true" {
        case "true", "1", "yes": return true
        case "false", "0", "no": return false
        case let other: throw ValidationError("ASSENT_TASKS_ON_EVENT_LOOPS: '\(other)' is not true or false")
        }
    }

    func run() async throws {
        // Swift's tasks run on the server's NIO event loops instead of a thread pool of their own, so
        // a request is read, handled and answered on one thread: every hop from an event loop to the
        // pool and back had cost two thread wake-ups. Measured (release, 100,000 contacts, alternating
        // runs): consent checks 11.8-14.3k -> 18.0-18.5k/s and p99 11.5-15.4 -> 7.7-8.0 ms; durable
        // changes 4,461-4,604 -> 4,735/s; /healthz alone 27-34k -> 24-29k/s (NIO's task queue costs
        // more per job than Swift's pool, which only pays off where a request hops). A job stays on
        // the loop it came from, so nothing may block a loop waiting for other jobs: bcrypt runs on
        // NIOThreadPool, SQLite work that can wait for a connection on GRDB's or Dispatch's threads.
        if try Self.tasksOnEventLoops() { NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor() }
        if logFormat == "json" {
            LoggingSystem.bootstrap { label in JSONLogHandler(label: label) }
        } else {
            LoggingSystem.bootstrap { label in TextLogHandler(label: label) }
        }
        var logger = Logger(label: "assent")
        logger.logLevel = Logger.Level(rawValue: logLevel) ?? .info
        // A taken address is said before anything is opened: a first start had created the database
        // and shown its admin key, then failed to listen.
        try await Self.checkListenable(host: host, port: port)
        // Probes reach a stand-in meanwhile: live, not ready (README: Operations).
        var ledger = try await whileStarting(host: host, port: port, logger: logger) { try await reportingErrors { try await store.openLedger(waitingForLock: .seconds(300), serving: true) } }
        ledger.confirmationLifetime = TimeInterval(mail.confirmationDays) * 86_400
        ledger.receiptEmailActions = try mail.receiptActions()
        let database = try store.databaseDescription()
        if try await ledger.store.apiKeys().isEmpty {
            let (key, token) = APIKey.generate(name: "initial admin", scope: .admin, now: Date().truncatedToMilliseconds)
            try await ledger.store.insertAPIKey(key)
            emit("""
                First start: created an admin API key. It is shown only this once; keep it safe:

                    \(token)

                Use it as 'Authorization: Bearer <key>'. Create more with 'assent keys create'.

                """)
        }
        if try await ledger.store.staffUsers().isEmpty {
            let password = Ledger.oneTimePassword()
            let created: StaffUser?
            do {
                created = try await ledger.createStaffUser(email: adminEmail, name: "Administrator", role: .admin, password: password,
                                                           mustChangePassword: true, actor: nil)
            } catch DomainError.conflict {
                created = nil // another instance starting at the same time made it
            } catch let error as DomainError {
                throw ValidationError("--admin-email: \(error.description)")
            }
            if let admin = created {
            emit("""
                First start: created the console administrator. Sign in at /console as

                    \(admin.email.value)
                    one-time password: \(password)

                You choose your own password at the first sign-in. Add staff with 'assent users add'.

                """)
            }
        }
        let host = self.host
        // With --port 0 the real port is known only once listening; links need it.
        let publicURL = PublicURL(mail.publicURL.isEmpty ? nil : mail.publicURL)
        let templates: MailTemplates
        do {
            templates = try await MailTemplates(overrides: mail.templates.isEmpty ? nil : mail.templates)
        } catch {
            throw ValidationError("--templates: \(error)")
        }
        let from = MailAddress(parsing: mail.mailFrom)
        // Receipts name a policy URL; without one configured, the public URL
        // (known here unless the port is picked at start-up).
        let defaultPolicyURL = !mail.publicURL.isEmpty ? mail.publicURL
            : port != 0 ? "http://\(host == "0.0.0.0" ? "127.0.0.1" : host):\(port)" : "about:blank"
        let issuer = ReceiptIssuer(
            controller: .init(piiController: mail.organisation, contact: mail.organisation, address: mail.controllerAddress, email: from.address,
                              phone: mail.controllerPhone, piiControllerUrl: mail.publicURL.isEmpty ? nil : mail.publicURL),
            jurisdiction: mail.jurisdiction, policyURL: mail.policyURL.isEmpty ? defaultPolicyURL : mail.policyURL)
        _ = try await ledger.receiptSigner()
        let transport = try mail.transport(logger: logger)
        let composer = MailComposer(templates: templates, settings: MailSettings(from: MailAddress(parsing: mail.mailFrom), organisation: mail.organisation,
                                                                                 publicURL: { publicURL.value }), store: ledger.store,
                                    receipts: { [ledger] id in try await ledger.receipt(eventID: id, issuer: issuer) })
        let worker = OutboxWorker(store: ledger.store, masterKey: ledger.masterKey, transport: transport, composer: composer, logger: logger)
        var expiry = Scheduler(ledger: ledger, logger: logger)
        if verifyEveryHours > 0 { expiry.verifyEvery = .milliseconds(Int64(verifyEveryHours * 3_600_000)) }
        var webhooks = WebhookWorker(ledger: ledger, logger: logger)
        // For tests of retries: shrinks the day of webhook retries (0.001 = about 90 seconds).
        if let scale = ProcessInfo.processInfo.environment["ASSENT_WEBHOOK_BACKOFF_SCALE"].flatMap(Double.init), scale > 0 { webhooks.backoffScale = scale }
        var site = SiteConfiguration(publicURL: { publicURL.value }, organisation: mail.organisation,
                                     formPostsPerMinute: formPostsPerMinute, linkPostsPerMinute: linkPostsPerMinute,
                                     trustedProxies: Set(trustedProxies), consoleTimeZone: TimeZone(identifier: consoleTimeZone)!)
        site.publicRequestsPerMinute = publicRequestsPerMinute
        site.failedAuthenticationsPerMinute = failedAuthPerMinute
        let server = ServerConfiguration(host: host, port: port, headerTimeout: .milliseconds(Int64(headerTimeout * 1_000)),
                                         bodyTimeout: .milliseconds(Int64(bodyTimeout * 1_000)))
        let listening = Listening()
        let app = try await buildApplication(configuration: server, ledger: ledger, issuer: issuer, site: site,
                                             services: [worker, expiry, webhooks], logger: logger) { port in
            listening.begin()
            publicURL.setDefault("http://\(host == "0.0.0.0" ? "127.0.0.1" : host):\(port)")
            emit("Assent is serving the API on http://\(host):\(port)/api/v1 and the staff console on http://\(host):\(port)/console (\(database)); emails: \(transport.summary); press Ctrl-C to stop.")
        }
        do {
            try await runUntilStopped(app, logger: logger)
        } catch let error as IOError where !listening.began {
            throw ValidationError(Self.cannotListen(host: host, port: port, error))
        }
    }

    /// Listens on the address for a moment and lets go (nothing for port 0, which picks a free one),
    /// so that a start that could not serve stops before it opens, migrates or creates anything.
    static func checkListenable(host: String, port: Int) async throws {
        guard port != 0 else { return }
        do {
            // Accepting nothing: a probe that connects meanwhile is reset when the socket closes, not left hanging.
            let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .serverChannelOption(.autoRead, value: false)
                .bind(host: host, port: port).get()
            try await channel.close()
        } catch let error as IOError {
            throw ValidationError(cannotListen(host: host, port: port, error))
        } catch let error as SocketAddressError {
            throw ValidationError(cannotListen(host: host, port: port, error))
        } catch let error as SocketAddressError.UnknownHost {
            throw ValidationError(cannotListen(host: host, port: port, error))
        }
    }

    /// Why the server could not listen on its address, and what to do about it.
    static func cannotListen(host: String, port: Int, _ error: any Error) -> String {
        let noSuchAddress = "this machine has no such address: choose one of its own with --host or ASSENT_HOST (0.0.0.0 for all of them)"
        let why = switch (error as? IOError)?.errnoCode {
        case EADDRINUSE: "the port is in use (another Assent, or another program, listens there): stop that, or choose another port with --port or ASSENT_PORT"
        case EACCES: "not permitted (ports below 1024 need privileges): choose a port from 1024 up with --port or ASSENT_PORT"
        case EADDRNOTAVAIL: noSuchAddress
        case nil where error is SocketAddressError || error is SocketAddressError.UnknownHost: "\(noSuchAddress) (\(error))"
        default: "\(error)"
        }
        return "cannot listen on \(host):\(port): \(why)"
    }

    /// Whether the server has begun listening (set from the server's start-up callback).
    final class Listening: @unchecked Sendable {
        private let lock = NSLock()
        private var value = false
        var began: Bool { lock.withLock { value } }
        func begin() { lock.withLock { value = true } }
    }
}

struct Migrate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Create or upgrade the database schema.")
    @OptionGroup var store: StoreOptions

    func run() async throws {
        let s = try await store.openStore()
        let applied = try await s.appliedMigrations()
        print("\(try store.databaseDescription()) is at migration \(applied.last ?? "none") (\(applied.count) applied)")
    }
}

struct Backup: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Copy the database to a file while Assent keeps running (online backup).",
        discussion: """
            SQLite: a copy of the file (SQLite's online backup), ready to open. PostgreSQL: pg_dump's custom format, one \
            consistent snapshot; restore it with pg_restore --no-owner --dbname=URL FILE into an empty database. \
            Back up the master key separately: without it the evidence in the copy cannot be read.
            """)
    @OptionGroup var store: StoreOptions
    @Argument(help: "Where to write the copy; must not exist yet.") var destination: String

    func run() async throws {
        guard !FileManager.default.fileExists(atPath: destination) else {
            throw ValidationError("\(destination) already exists; choose a new file name")
        }
        if case .postgres(let location, _) = try store.target() {
            try dump(location)
            return
        }
        guard let sqlite = try await store.openStore() as? SQLiteStore else { return }
        try await sqlite.backup(to: destination)
        let copy = try SQLiteStore(path: destination)
        let applied = try await copy.appliedMigrations()
        print("backed up \(sqlite.path) to \(destination) (schema \(applied.last ?? "none")); keep the master key (\(store.keyFile.isEmpty ? sqlite.path + ".key" : store.keyFile) or ASSENT_MASTER_KEY) with it, stored apart")
    }

    /// pg_dump reads the whole database in one repeatable-read transaction: a consistent
    /// moment, however many writes go on meanwhile. The password goes in the environment,
    /// not on the command line (where `ps` would show it).
    func dump(_ location: PostgresLocation) throws {
        var withoutPassword = location
        withoutPassword.password = nil
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["pg_dump", "--format=custom", "--no-owner", "--file", destination, "--dbname", withoutPassword.libpqURL]
        var environment = ProcessInfo.processInfo.environment
        if let password = location.password { environment["PGPASSWORD"] = password }
        process.environment = environment
        let errors = Pipe()
        process.standardError = errors
        do { try process.run() } catch {
            throw ValidationError("assent backup on PostgreSQL runs pg_dump, which could not be started (apt-get install postgresql-client): \(error)")
        }
        let message = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            try? FileManager.default.removeItem(atPath: destination)
            throw ValidationError(process.terminationStatus == 127
                ? "assent backup on PostgreSQL runs pg_dump, which is not installed (apt-get install postgresql-client)"
                : "pg_dump failed: \(message.trimmingCharacters(in: .whitespacesAndNewlines))")
        }
        print("backed up PostgreSQL \(location.username)@\(location.host):\(location.port)/\(location.database) to \(destination) (pg_dump custom format; "
              + "restore with pg_restore --no-owner --dbname=URL \(destination)); keep the master key (ASSENT_MASTER_KEY) with it, stored apart")
    }
}

struct Topics: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Manage topics (areas of interest).", subcommands: [Add.self, List.self, Retire.self])

    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Define a topic with its notice text.")
        @OptionGroup var store: StoreOptions
        @Argument(help: "A slug such as hr-training.") var key: String
        @Option(help: "Title shown to people.") var title: String
        @Option(help: "The exact statement shown when asking (notice version 1).") var notice: String
        @Option(help: "Group of topics, e.g. training or news.") var category: String = "general"
        @Option(help: "Longer description.") var description: String = ""
        @Flag(inversion: .prefixedNo, help: "Opt-ins from forms and the portal must be confirmed by email (default on).") var doubleOptIn = true
        @Option(help: "Days a grant lasts before it expires.") var lifetimeDays: Int?
        @Option(help: "With --lifetime-days: email a renewal link this many days before a grant expires.") var repermissionDays: Int?

        func run() async throws {
            let ledger = try await store.openLedger()
            let topic = try await reportingErrors {
                try await ledger.createTopic(Topic(key: key, title: title, description: description, category: category,
                                                   requiresDoubleOptIn: doubleOptIn, consentLifetimeDays: lifetimeDays,
                                                   repermissionDaysBefore: repermissionDays, createdAt: Date()),
                                             noticeText: notice)
            }
            print("created topic \(topic.key) (\(topic.category)): \(topic.title)")
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List topics grouped by category.")
        @OptionGroup var store: StoreOptions
        @Flag(help: "Include retired topics.") var all = false

        func run() async throws {
            let ledger = try await store.openLedger()
            let topics = try await ledger.store.topics(includeRetired: all)
            if topics.isEmpty { print("no topics yet; add one with 'assent topics add'") }
            var category: String?
            for t in topics {
                if t.category != category {
                    print("\(t.category):")
                    category = t.category
                }
                let flags = [t.status == .retired ? "retired" : nil, t.requiresDoubleOptIn ? "double opt-in" : nil,
                             t.consentLifetimeDays.map { "lasts \($0) days" }, t.repermissionDaysBefore.map { "renewal asked \($0) days before" }, "notice v\(t.currentNoticeVersion)"].compactMap { $0 }
                print("  \(t.key)  \(t.title)  [\(flags.joined(separator: ", "))]")
            }
        }
    }

    struct Retire: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Retire a topic: history stays, new opt-ins are refused.")
        @OptionGroup var store: StoreOptions
        @Argument var key: String

        func run() async throws {
            let ledger = try await store.openLedger()
            let topic = try await reportingErrors { try await ledger.retireTopic(key: key) }
            print("retired topic \(topic.key)")
        }
    }
}

struct Contacts: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Manage contacts.", subcommands: [Add.self, Show.self, ContactLinks.self])

    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a contact (every topic reads No).")
        @OptionGroup var store: StoreOptions
        @Argument var email: String
        @Option var name: String?
        @Option var externalId: String?
        @Option var locale: String?

        func run() async throws {
            let ledger = try await store.openLedger()
            let contact = try await reportingErrors {
                try await ledger.createContact(email: EmailAddress(email), name: name, externalID: externalId, locale: locale)
            }
            print("created contact \(contact.id.uuidString.lowercased()) <\(contact.email)>")
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show a contact's preferences and timeline.")
        @OptionGroup var store: StoreOptions
        @Argument(help: "Contact id, email or external id.") var contact: String

        func run() async throws {
            let ledger = try await store.openLedger()
            let c = try await findContact(contact, in: ledger)
            print("\(c.id.uuidString.lowercased())  <\(c.email)>  \(c.name ?? "")\(c.externalID.map { "  external id \($0)" } ?? "")")
            let prefs = Dictionary(try await ledger.store.preferences(contactID: c.id).map { ($0.topicKey, $0) }, uniquingKeysWith: { a, _ in a })
            let now = Date()
            print("preferences:")
            for topic in try await ledger.store.topics(includeRetired: true) where topic.isActive || prefs[topic.key] != nil {
                let p = prefs[topic.key]
                let yes = topic.isActive && (p?.allowsSending(at: now) ?? false)
                print("  \(topic.key): \(yes ? "Yes" : "No") (\(p?.effectiveState(at: now).rawValue ?? "none")\(p.map { " since \($0.since.display)" } ?? ""))")
            }
            print("timeline (newest first):")
            for entry in try await ledger.timeline(contactID: c.id, beforeSeq: nil, limit: 1_000) {
                let e = entry.event
                var line = "  #\(e.seq) \(e.occurredAt.display) \(e.topicKey): \(e.fromState.rawValue) -> \(e.toState.rawValue) by \(e.source.rawValue)"
                if let channel = e.channel { line += "/\(channel.rawValue)" }
                line += " (\(e.actor.kind.rawValue)\(e.actor.id.map { " \($0)" } ?? ""))"
                if let v = e.noticeVersion { line += " notice v\(v)" }
                if let note = entry.personal?.note { line += " note: \(note)" }
                print(line)
            }
        }
    }
}

struct Keys: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Manage API keys.", subcommands: [Create.self, List.self, Revoke.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create an API key; the key is printed once.")
        @OptionGroup var store: StoreOptions
        @Option(help: "What the key is for.") var name: String
        @Option(help: "read, write or admin.") var scope: String = "read"

        func run() async throws {
            guard let scope = APIScope(rawValue: scope) else { throw ValidationError("--scope: '\(scope)' must be read, write or admin") }
            let ledger = try await store.openLedger()
            try await reportingErrors { try APIKey.validateName(name) }
            let (key, token) = APIKey.generate(name: name, scope: scope, now: Date().truncatedToMilliseconds)
            try await ledger.store.insertAPIKey(key)
            try await ledger.audit(nil, "key_create", target: "key:\(key.id)", detail: "\(scope.rawValue): \(name)")
            print(token)
            FileHandle.standardError.write(Data("created \(scope.rawValue) key \(key.id) (\(name)); the key above is not shown again\n".utf8))
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List API keys (never their secrets).")
        @OptionGroup var store: StoreOptions

        func run() async throws {
            let ledger = try await store.openLedger()
            for k in try await ledger.store.apiKeys() {
                print("\(k.id)  \(k.scope.rawValue)  \(k.name)  created \(k.createdAt.display)\(k.revokedAt.map { "  REVOKED \($0.display)" } ?? "")")
            }
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Revoke an API key.")
        @OptionGroup var store: StoreOptions
        @Argument var id: String

        func run() async throws {
            let ledger = try await store.openLedger()
            guard try await ledger.store.revokeAPIKey(id: id, at: Date().truncatedToMilliseconds) else {
                throw ValidationError("no active API key with id '\(id)'")
            }
            try await ledger.audit(nil, "key_revoke", target: "key:\(id)")
            print("revoked key \(id)")
        }
    }
}

struct Verify: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Recompute every hash chain and report the first broken link per contact.",
        discussion: "The run is recorded in the database; the server's /metrics reports the latest (assent_verify_*).")
    @OptionGroup var store: StoreOptions

    func run() async throws {
        let ledger = try await store.openLedger()
        let started = ContinuousClock.now
        let report = try await ledger.verify()
        for problem in report.breaks { print("BROKEN \(problem)") }
        if report.isIntact {
            print("ok: \(report.contacts) contacts, \(report.events) events, every chain intact")
        } else {
            print("FAILED: \(report.breaks.count) of \(report.contacts) contacts have a broken chain (\(report.events) events read)")
        }
        // Recorded for /metrics after the result is out; a database that takes no writes (a replica) only loses the record.
        do {
            try await ledger.recordVerification(report, seconds: started.duration(to: .now), origin: "assent verify")
        } catch {
            FileHandle.standardError.write(Data("assent: the result was not recorded for /metrics: \(error)\n".utf8))
        }
        if !report.isIntact { throw ExitCode(2) }
    }
}

struct Outbox: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "See and retry queued emails.", subcommands: [List.self, Retry.self])

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List outbox items, newest first.")
        @OptionGroup var store: StoreOptions
        @Option(help: "Only items with this status: pending, sent or dead.") var status: String?
        @Option(help: "How many to show.") var limit: Int = 50

        func validate() throws {
            if let status, OutboxItem.Status(rawValue: status) == nil { throw ValidationError("--status: '\(status)' must be pending, sent or dead") }
            guard (1...10_000).contains(limit) else { throw ValidationError("--limit: must be from 1 to 10000") }
        }

        func run() async throws {
            let ledger = try await store.openLedger()
            let items = try await ledger.store.outboxItems(status: status.flatMap(OutboxItem.Status.init(rawValue:)), limit: limit)
            if items.isEmpty { print("the outbox is empty\(status.map { " (no \($0) items)" } ?? "")") }
            for item in items {
                var line = "\(item.id.uuidString.lowercased())  \(item.status.rawValue)  \(item.kind)  created \(item.createdAt.display)  attempts \(item.attempts)"
                switch item.status {
                case .pending: line += "  next \(item.nextAttemptAt.display)"
                case .sent: line += item.sentAt.map { "  sent \($0.display)" } ?? ""
                case .dead: break
                }
                if let error = item.lastError { line += "  last error: \(error)" }
                print(line)
            }
        }
    }

    struct Retry: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Send dead items again (one by id, or all with --all).")
        @OptionGroup var store: StoreOptions
        @Argument(help: "The item's id.") var id: String?
        @Flag(help: "Retry every dead item.") var all = false

        func validate() throws {
            guard (id != nil) != all else { throw ValidationError("give an item id or --all") }
            if let id, UUID(uuidString: id) == nil { throw ValidationError("'\(id)' is not an outbox item id") }
        }

        func run() async throws {
            let ledger = try await store.openLedger()
            let count = try await ledger.store.retryOutbox(id: id.flatMap(UUID.init(uuidString:)), now: Date())
            if count == 0 && id != nil { throw ValidationError("no dead outbox item with id \(id!)") }
            print("\(count) item\(count == 1 ? "" : "s") will be sent again by the running server")
        }
    }
}
