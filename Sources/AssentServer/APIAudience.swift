import AssentCore
import AssentStore
import Foundation
import Hummingbird
import NIOCore
import NIOPosix
#if canImport(Glibc)
import Glibc
#endif

struct BatchCheckBody: StrictBody {
    static let allowedKeys: Set<String> = ["topic", "emails"]
    var topic: String
    var emails: [String]
}

/// The batch check's answer. Written directly rather than through JSONEncoder,
/// which cost a tenth of a 10,000-address call; the same bytes JSONEncoder
/// writes with sorted keys (a test holds them equal).
struct BatchCheckJSON: Encodable {
    struct Item: Encodable {
        var email: String
        var allowed: Bool
        var reason: String
    }

    var topic: String
    var results: [Item]

    var encoded: Data {
        // As bytes (the String concatenation and a JSON-escaped copy of every address were a tenth of a call's CPU).
        var out = [UInt8]()
        out.reserveCapacity(results.count * 80 + 64)
        JSONObjectBytes.write({ o in
            o.array("results", results) { item, out in
                JSONObjectBytes.write({ i in
                    i.bool("allowed", item.allowed)
                    i.string("email", item.email)
                    i.string("reason", item.reason)
                }, into: &out)
            }
            o.string("topic", topic)
        }, into: &out)
        out.append(UInt8(ascii: "\n"))
        return Data(out)
    }
}

extension API {
    var audienceRoutes: [APIRoute] {
        [
            APIRoute(method: .post, path: "/api/v1/check", scope: .read) { r, c in try await batchCheck(r, c) },
            // Rows carry each person's links, which act as them: a write key is needed.
            APIRoute(method: .get, path: "/api/v1/audience", scope: .write) { r, _ in try await audience(r) },
        ]
    }

    /// Up to 10,000 addresses for one topic in one call: allowed or not, and why.
    func batchCheck(_ request: Request, _ context: AssentRequestContext) async throws -> APIResponse {
        var request = request
        let contentType = request.headers[.contentType]?.lowercased() ?? ""
        guard contentType.hasPrefix("application/json") else {
            throw APIError(.unsupportedMediaType, detail: "send the body as JSON with 'Content-Type: application/json'")
        }
        // 10,000 addresses need more than the usual 64 KB.
        let limit = 2 * 1024 * 1024
        let buffer: ByteBuffer
        do { buffer = try await request.collectBody(upTo: limit) } catch let error as any HTTPResponseError where error.status == .contentTooLarge {
            throw APIError(.contentTooLarge, detail: "a batch check body may be at most \(limit) bytes")
        }
        let body: BatchCheckBody
        do { body = try JSONCoding.decoder.decode(Strict<BatchCheckBody>.self, from: Data(buffer: buffer)).value } catch let error as DecodingError {
            throw JSONCoding.apiError(error)
        }
        try Topic.validateKey(body.topic, field: "topic")
        guard body.emails.count <= Ledger.batchCheckLimit else {
            throw APIError.invalid(field: "emails", "at most \(Ledger.batchCheckLimit) addresses per call, not \(body.emails.count)")
        }
        var problems: [ValidationError] = []
        var emails: [EmailAddress] = []
        emails.reserveCapacity(body.emails.count)
        for (i, text) in body.emails.enumerated() {
            // The field is named only for a bad address (building "emails[i]" for each was most of a good one's check).
            do { emails.append(try EmailAddress(text)) } catch let DomainError.invalid(e) {
                problems += e.map { ValidationError(field: "emails[\(i)]", $0.message) }
                if problems.count >= 20 { break }
            }
        }
        if !problems.isEmpty { throw APIError.invalid(problems) }
        let results: [CheckResult]
        do {
            results = try await ledger.check(emails: emails, topicKey: body.topic)
        } catch DomainError.notFound(what: "topic", _) {
            throw APIError.invalid(field: "topic", "unknown topic '\(body.topic)'")
        }
        let answer = BatchCheckJSON(topic: body.topic, results: zip(emails, results).map {
            .init(email: $0.0.value, allowed: $0.1.allowed, reason: $0.1.reason.rawValue)
        })
        return APIResponse(status: .ok, body: answer.encoded, contentType: "application/json")
    }

    /// Who may be sent these topics now, streamed as CSV or NDJSON (or just counted).
    func audience(_ request: Request) async throws -> APIResponse {
        let q = try Query(request)
        guard let topicsText = q.string("topics") ?? q.string("categories").map({ _ in "" }) else {
            throw APIError.badRequest(field: "topics", "is required: one or more topic keys, comma-separated (or categories=)")
        }
        let match = try q.string("match").map { text in
            guard let match = AudienceQuery.Match(rawValue: text) else { throw APIError.badRequest(field: "match", "must be any or all") }
            return match
        } ?? .any
        let format = q.string("format") ?? "csv"
        guard ["csv", "ndjson"].contains(format) else { throw APIError.badRequest(field: "format", "must be csv or ndjson") }
        let query = AudienceQuery(topics: topicsText.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty },
                                  categories: (q.string("categories") ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty },
                                  match: match, locale: q.string("locale"), createdSince: try q.date("createdSince"), changedSince: try q.date("changedSince"))
        return try await audienceResponse(query, format: format, countOnly: try q.bool("count") == true,
                                          name: (query.topics + query.categories).joined(separator: "+"))
    }

    /// The ledger names an audience's parts `topic[i]` and `category[i]`; the API calls them `topics` and `categories`.
    static func wireFields(_ errors: [ValidationError]) -> [ValidationError] {
        errors.map { error in
            var field = error.field
            if field == "topic" || field.hasPrefix("topic[") { field = "topics" + field.dropFirst("topic".count) }
            if field.hasPrefix("category[") { field = "categories" + field.dropFirst("category".count) }
            if field == "category" { field = "categories" }
            return ValidationError(field: field, error.message)
        }
    }

    /// An audience streamed as CSV or NDJSON (or just its size), a page at a time.
    func audienceResponse(_ definition: AudienceQuery, format: String, countOnly: Bool, name: String) async throws -> APIResponse {
        let query: AudienceQuery
        do { query = try await ledger.validate(definition) } catch DomainError.invalid(let errors) {
            throw APIError.invalid(Self.wireFields(errors))
        }
        if countOnly {
            var count = 0
            try await ledger.audience(query) { count += $0.count }
            return try APIResponse(json: ["count": count])
        }
        let ledger = self.ledger, base = site.baseURL
        var response = APIResponse(status: .ok, body: Data(), contentType: format == "csv" ? "text/csv; charset=utf-8" : "application/x-ndjson")
        response.headers[.contentDisposition] = "attachment; filename=\"audience-\(name).\(format)\""
        response.stream = { writer in
            if format == "csv" {
                try await writer.write(ByteBuffer(string: AudienceRows.csvHeader(query) + "\r\n"))
            }
            try await AudienceRows.stream(query, ledger: ledger, base: base, format: format) { try await writer.write(ByteBuffer(bytes: $0)) }
        }
        return response
    }
}

/// One audience member as a CSV row or an NDJSON object.
public enum AudienceRows {
    public static func csvHeader(_ query: AudienceQuery) -> String {
        (["email", "name", "external_id", "locale"] + query.topics.map { "\($0)_granted_at" } + ["preference_centre_url", "unsubscribe_url"])
            .joined(separator: ",")
    }

    /// A page of members as CSV rows or NDJSON lines. Their links' secrets come with the page
    /// (missing ones are made for the page at once); a contact erased meanwhile is left out.
    /// Written as bytes with no String per field: an export writes a million rows and two
    /// signed links per row (18,000 rows/s when each row was made of Strings).
    public static func lines(_ members: [AudienceMember], query: AudienceQuery, ledger: Ledger, base: String, format: String) async throws -> [UInt8] {
        var out = [UInt8]()
        let writer = PageWriter(ledger: ledger, topics: query.topics, base: base, csv: format == "csv")
        for part in try await writer.start(members) { out.append(contentsOf: try await part.value) }
        return out
    }

    /// Every row of an audience, handed to `write` a page at a time, in order. Each page is
    /// written as bytes on writer threads (`StartedWork`), in two halves at once, while the page before
    /// it goes to `write` and the store reads the next: signing the links is most of an
    /// export's CPU, and on the event loop alone it had one core (the server's Swift tasks run
    /// on the loop a request came in on). 250,000 -> 320,000 rows/s with the halves on two
    /// threads, 390,000 with the pipeline (200,000 contacts). At most two pages are held:
    /// the one being written out and the one going to `write`. A store that reads pages as
    /// bytes (SQLite) hands them over so, and they are decoded only as they are written: its
    /// read, which paces an export, made a member of every row before (~1.8 µs of CPU per row;
    /// 425-459k -> 661-730k rows/s at 1,000,000 contacts). Members (other stores, or a query
    /// that filters them) are copied into such a page, so that one writer writes both.
    public static func stream(_ query: AudienceQuery, ledger: Ledger, base: String, format: String, pageSize: Int = 4_000,
                              to write: ([UInt8]) async throws -> Void) async throws {
        // Validated here too, so that a page read as bytes is never read for a query that was not.
        let query = try await ledger.validate(query)
        let writer = PageWriter(ledger: ledger, topics: query.topics, base: base, csv: format == "csv")
        var previous: [StartedWork] = []
        func hand(_ started: [StartedWork]) async throws {
            for part in previous { try await write(try await part.value) }
            previous = started
        }
        let asRows = try await ledger.audienceRows(query, pageSize: pageSize) { page in
            try await hand(writer.start(page, made: try await ledger.linkSecrets(forRowsOf: page)))
        }
        if !asRows {
            try await ledger.audience(query, pageSize: pageSize) { members in try await hand(try await writer.start(members)) }
        }
        for part in previous { try await write(try await part.value) }
    }

    /// Writes pages' rows; a value, so that two threads can each use one.
    struct PageWriter: Sendable {
        /// Below this many rows per half, handing a half to another thread costs more than it saves.
        static let minimumHalf = 64

        let ledger: Ledger
        let topics: [String]
        /// Each CSV column's topic as grants name it: the first index of its key (a query may
        /// name a topic twice, and then has two columns for it).
        let columnTopics: [Int]
        let csv: Bool
        let unsubscribeTopic: String?
        let centrePrefix: [UInt8], unsubscribePrefix: [UInt8]

        init(ledger: Ledger, topics: [String], base: String, csv: Bool) {
            self.ledger = ledger
            self.topics = topics
            columnTopics = topics.map { key in topics.firstIndex(of: key)! }
            self.csv = csv
            unsubscribeTopic = topics.count == 1 ? topics[0] : nil
            centrePrefix = Array((base + "/p/").utf8)
            unsubscribePrefix = Array((base + "/u/").utf8)
        }

        /// Starts writing members' rows, their missing link secrets made first; each half is copied
        /// into a page on its writing thread.
        func start(_ members: [AudienceMember]) async throws -> [StartedWork] {
            let secrets = try await ledger.linkSecrets(for: members), middle = members.count / 2
            let halves = members.count >= 2 * Self.minimumHalf ? [0..<middle, middle..<members.count] : [members.indices]
            return halves.map { half in
                StartedWork {
                    let page = AudienceRowsPage(Array(members[half]), topics: topics, secrets: Array(secrets[half]))
                    return write(page, page.rows.indices, made: [:])
                }
            }
        }

        /// Starts writing a page's rows on writer threads (two halves when it is large).
        func start(_ page: AudienceRowsPage, made: [Int: Data]) -> [StartedWork] {
            let rows = page.rows.indices
            guard rows.count >= 2 * Self.minimumHalf else { return [StartedWork { write(page, rows, made: made) }] }
            return [StartedWork { write(page, rows.prefix(rows.count / 2), made: made) },
                    StartedWork { write(page, rows.dropFirst(rows.count / 2), made: made) }]
        }

        /// The rows of `page` in `rows`, with the secrets made for rows that had none; a row with
        /// neither (a contact erased meanwhile) is left out.
        func write(_ page: AudienceRowsPage, _ rows: Range<Int>, made: [Int: Data]) -> [UInt8] {
            var out = [UInt8]()
            out.reserveCapacity(rows.count * (csv ? 240 : 320))
            var centre = [UInt8](), unsubscribe = [UInt8]()
            // A row's grant times by topic index, set and cleared for each row (CSV).
            var since = [Int64?](repeating: nil, count: topics.count)
            page.bytes.withUnsafeBufferPointer { bytes in
                func field(_ range: AudienceRowsPage.Field) -> UnsafeBufferPointer<UInt8>? { range.map { UnsafeBufferPointer(rebasing: bytes[$0]) } }
                for i in rows {
                    let row = page.rows[i]
                    func sign(_ secret: UnsafeRawBufferPointer) {
                        centre.removeAll(keepingCapacity: true)
                        centre.append(contentsOf: centrePrefix)
                        ledger.appendLinkToken(ContactLink(purpose: .preferenceCentre, contactID: row.id), secret: secret, to: &centre)
                        unsubscribe.removeAll(keepingCapacity: true)
                        unsubscribe.append(contentsOf: unsubscribePrefix)
                        ledger.appendLinkToken(ContactLink(purpose: .unsubscribe, contactID: row.id, topicKey: unsubscribeTopic), secret: secret, to: &unsubscribe)
                    }
                    if let secret = field(row.secret) {
                        sign(UnsafeRawBufferPointer(secret))
                    } else if let secret = made[i] {
                        secret.withUnsafeBytes { sign($0) }
                    } else {
                        continue // erased meanwhile
                    }
                    let grants = page.grants[row.grants]
                    if csv {
                        appendCSV(row, grants, field: field, since: &since, centre: centre, unsubscribe: unsubscribe, to: &out)
                    } else {
                        appendNDJSON(row, grants, field: field, centre: centre, unsubscribe: unsubscribe, to: &out)
                    }
                }
            }
            return out
        }

        /// One CSV row. `since` is scratch (every entry nil), a grant time per topic index.
        private func appendCSV(_ row: AudienceRowsPage.Row, _ grants: ArraySlice<AudienceRowsPage.Grant>, field: (AudienceRowsPage.Field) -> UnsafeBufferPointer<UInt8>?,
                               since: inout [Int64?], centre: [UInt8], unsubscribe: [UInt8], to out: inout [UInt8]) {
            let comma = UInt8(ascii: ","), none = UnsafeBufferPointer<UInt8>(start: nil, count: 0)
            TextRows.appendCSVField(field(row.email) ?? none, to: &out)
            out.append(comma)
            TextRows.appendCSVField(field(row.name) ?? none, to: &out)
            out.append(comma)
            TextRows.appendCSVField(field(row.externalID) ?? none, to: &out)
            out.append(comma)
            TextRows.appendCSVField(field(row.locale) ?? none, to: &out)
            for grant in grants { since[grant.topic] = grant.sinceMilliseconds }
            for topic in columnTopics {
                out.append(comma)
                // Digits, dashes, colons and a dot: nothing to quote.
                if let ms = since[topic] { UTCTime.appendRFC3339(&out, millisecondsSince1970: ms) }
            }
            for grant in grants { since[grant.topic] = nil }
            out.append(comma)
            centre.withUnsafeBufferPointer { TextRows.appendCSVField($0, to: &out) }
            out.append(comma)
            unsubscribe.withUnsafeBufferPointer { TextRows.appendCSVField($0, to: &out) }
            out.append(13)
            out.append(10)
        }

        /// One NDJSON line, keys in sorted order as the rest of the API writes them.
        private func appendNDJSON(_ row: AudienceRowsPage.Row, _ grants: ArraySlice<AudienceRowsPage.Grant>, field: (AudienceRowsPage.Field) -> UnsafeBufferPointer<UInt8>?,
                                  centre: [UInt8], unsubscribe: [UInt8], to out: inout [UInt8]) {
            func key(_ name: StaticString) { name.withUTF8Buffer { out.append(contentsOf: $0) } }
            func text(_ value: AudienceRowsPage.Field) {
                if let value = field(value) { TextRows.appendJSONString(value, to: &out) } else { key("null") }
            }
            key("{\"email\":")
            text(row.email)
            key(",\"externalId\":")
            text(row.externalID)
            key(",\"grants\":{")
            // In topic-key order (a store's collation may order keys otherwise).
            let ordered = grants.count > 1 ? grants.sorted { topics[$0.topic] < topics[$1.topic] }[...] : grants
            for (n, grant) in ordered.enumerated() {
                if n > 0 { out.append(UInt8(ascii: ",")) }
                TextRows.appendJSONString(topics[grant.topic], to: &out)
                out.append(contentsOf: [UInt8(ascii: ":"), UInt8(ascii: "\"")])
                UTCTime.appendRFC3339(&out, millisecondsSince1970: grant.sinceMilliseconds)
                out.append(UInt8(ascii: "\""))
            }
            key("},\"locale\":")
            text(row.locale)
            key(",\"name\":")
            text(row.name)
            key(",\"preferenceCentreUrl\":")
            centre.withUnsafeBufferPointer { TextRows.appendJSONString($0, to: &out) }
            key(",\"unsubscribeUrl\":")
            unsubscribe.withUnsafeBufferPointer { TextRows.appendJSONString($0, to: &out) }
            key("}\n")
        }
    }

    /// Work started on another thread at once, its result awaited later. Not a child
    /// task: under `assent serve` Swift's jobs run on the event loop a request came in on, so a
    /// child task would share that loop's core with its parent.
    struct StartedWork: Sendable {
        private let result: EventLoopFuture<[UInt8]>

        init(_ body: @escaping @Sendable () -> [UInt8]) {
            // The result is handed over on an event loop (the caller's, under `assent serve`, where
            // the waiting job resumes anyway), so that whatever it wakes (a Swift job on Dispatch's
            // threads, in the command line) is started from a thread of normal priority, never from
            // a writer (a thread Linux starts from another inherits its nice value).
            let loop = MultiThreadedEventLoopGroup.currentEventLoop ?? MultiThreadedEventLoopGroup.singleton.any()
            result = Self.threads.runIfActive(eventLoop: loop) {
                Self.lowerPriority()
                return body()
            }
        }

        var value: [UInt8] {
            get async throws { try await result.get() }
        }

        /// Threads of their own, at a lower priority than the server's event loops and Dispatch's
        /// threads: an export's writing takes whatever CPU the process has left, and what paces it
        /// (the store's read: on PostgreSQL the connection's event loop) and other requests are
        /// not kept waiting for a core. (Nice values order threads within a scheduling group: with
        /// autogroups, the database's processes are another group, which this does not touch.)
        /// On Dispatch's threads the next page's query waited up to 5 ms for a writer's time slice
        /// to end: PostgreSQL 100k export, 10 exports each alternating, mean 403k -> 426k rows/s.
        static let threads: NIOThreadPool = {
            #if os(Linux)
            _ = processNice // read here, on the thread that starts the pool, before any writer lowers its own
            #endif
            let pool = NIOThreadPool(numberOfThreads: System.coreCount)
            pool.start()
            return pool
        }()

        /// The calling thread's nice value, raised by 10 over the process's (to 19 at most) once.
        /// Linux keeps a nice value per thread, so this touches a writer thread alone; elsewhere
        /// the call would renice the whole process, and is left out. A failure (a container that
        /// forbids it) only leaves the writers at normal priority.
        private static func lowerPriority() {
            #if os(Linux)
            let target = min(19, processNice + 10)
            errno = 0
            let current = getpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0)
            if errno == 0 && current < target { _ = setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, target) }
            #endif
        }

        #if os(Linux)
        /// The nice value of the thread that started the writers' pool.
        private static let processNice: Int32 = {
            errno = 0
            let nice = getpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0)
            return errno == 0 ? nice : 0
        }()
        #endif
    }

    /// RFC 4180 quoting, and a leading apostrophe for text a spreadsheet would run as a formula.
    public static func csv(_ field: String) -> String { TextRows.csvField(field) }
}
