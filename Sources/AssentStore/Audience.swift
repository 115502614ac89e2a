import AssentCore
import Foundation

/// A contact who may be sent at least one of an audience's topics, with their live grants.
public struct AudienceMember: Sendable, Equatable {
    public var contact: Contact
    /// Topic key -> the grant (since, expires).
    public var grants: [String: Preference]
    /// The contact's link secret, read with the page (nil: none yet; the export makes one).
    public var linkSecret: Data?

    public init(contact: Contact, grants: [String: Preference], linkSecret: Data? = nil) {
        self.contact = contact
        self.grants = grants
        self.linkSecret = linkSecret
    }
}

/// A page of an audience as the bytes of its fields, for a store that can read one so
/// (SQLite): the page is one buffer and three arrays, with nothing made per member, so
/// that the read that paces an export only steps the query and copies bytes, and the
/// rows are decoded as they are written, on the writing threads. The fields an export
/// writes only; a query that filters members reads `AudienceMember`s.
public struct AudienceRowsPage: Sendable {
    /// A field's bytes in `bytes`; nil for NULL.
    public typealias Field = Range<Int>?

    public struct Row: Sendable {
        public var id: UUID
        public var email: Field, name: Field, externalID: Field, locale: Field
        /// The link secret; nil when the contact has none yet.
        public var secret: Field
        /// This row's grants in `grants` (in the store's order of topic keys).
        public var grants: Range<Int>

        public init(id: UUID, email: Field, name: Field, externalID: Field, locale: Field, secret: Field, grants: Range<Int>) {
            (self.id, self.email, self.name, self.externalID, self.locale, self.secret, self.grants) = (id, email, name, externalID, locale, secret, grants)
        }
    }

    public struct Grant: Sendable {
        /// The topic's index in the topics the page was read for.
        public var topic: Int
        public var sinceMilliseconds: Int64

        public init(topic: Int, sinceMilliseconds: Int64) { (self.topic, self.sinceMilliseconds) = (topic, sinceMilliseconds) }
    }

    public var bytes: [UInt8] = []
    public var rows: [Row] = []
    public var grants: [Grant] = []
    /// Whether the read that made the page stopped at its limit (more rows may follow).
    public var full = false

    public init() {}

    /// Members copied into a page, for one writer of both (`secrets` in the members' order;
    /// a member without one is left out when written).
    public init(_ members: [AudienceMember], topics: [String], secrets: [Data?]) {
        rows.reserveCapacity(members.count)
        for (member, secret) in zip(members, secrets) {
            let c = member.contact, first = grants.count
            for (key, grant) in member.grants.sorted(by: { $0.key < $1.key }) {
                if let topic = topics.firstIndex(of: key) { grants.append(Grant(topic: topic, sinceMilliseconds: grant.since.millisecondsSince1970)) }
            }
            rows.append(Row(id: c.id, email: field(c.email.value.utf8), name: field(c.name?.utf8), externalID: field(c.externalID?.utf8),
                            locale: field(c.locale?.utf8), secret: field(secret), grants: first..<grants.count))
        }
    }

    /// Appends a field's bytes and gives their range; nil (NULL) appends nothing.
    @inlinable
    public mutating func field<Bytes: Collection<UInt8>>(_ value: Bytes?) -> Field {
        guard let value else { return nil }
        let start = bytes.count
        bytes.append(contentsOf: value)
        return start..<bytes.count
    }

    /// Adds one row of an audience page's query (a contact and one of its grants, in contact
    /// order): the grant joins the last row when it is the same contact's, else a row is started
    /// with the fields `read` appends.
    public mutating func add(id: UUID, _ grant: Grant,
                             read: (inout AudienceRowsPage) throws -> (email: Field, name: Field, externalID: Field, locale: Field, secret: Field)) rethrows {
        grants.append(grant)
        if id == rows.last?.id {
            rows[rows.count - 1].grants = rows[rows.count - 1].grants.lowerBound..<grants.count
            return
        }
        let f = try read(&self)
        rows.append(Row(id: id, email: f.email, name: f.name, externalID: f.externalID, locale: f.locale, secret: f.secret,
                        grants: (grants.count - 1)..<grants.count))
    }

    /// Ends a page read with `LIMIT rowLimit`: a full page (`full`: the read stopped at its limit)
    /// may end part way through a contact's grants, and that contact then starts the next page.
    public mutating func end(rowsRead: Int, rowLimit: Int, topicCount: Int) {
        full = rowsRead >= rowLimit
        if rowsRead == rowLimit && topicCount > 1 && rows.count > 1 { grants.removeSubrange(rows.removeLast().grants) }
    }
}

/// A store that reads an audience's pages as bytes (see `AudienceRowsPage`).
public protocol AudienceRowsReader: LedgerStore {
    /// The same rows as `audiencePage`, in the same order and with the same page ends.
    func audienceRowsPage(topics: [String], now: Date, after: UUID?, limit: Int) async throws -> AudienceRowsPage
}

/// A store whose audience pages are read more than one at a time: the contacts are cut into
/// ranges of ids whose ends are known before their pages are read, so that the next ranges'
/// pages can be read while this one's are.
public protocol AudienceRangeReader: AudienceRowsReader {
    /// How many ranges' pages are read at once.
    var audienceReadsAtOnce: Int { get }
    /// Up to `count` contact ids after `after` (nil: from the first), in order, each `step`
    /// contacts after the one before: the ends of ranges of `step` contacts. Fewer than `count`
    /// when the contacts run out.
    func contactBoundaries(after: UUID?, step: Int, count: Int) async throws -> [UUID]
    /// `audienceRowsPage`'s rows of contacts with ids after `after` and at most `through` (nil: no end).
    func audienceRowsPage(topics: [String], now: Date, after: UUID?, through: UUID?, limit: Int) async throws -> AudienceRowsPage
}

/// Who an audience is: the topics, whether any or all of them must be granted, and filters.
public struct AudienceQuery: Sendable, Equatable, Codable {
    public enum Match: String, Sendable, CaseIterable, Codable { case any, all }

    public var topics: [String]
    /// Every active topic of these categories joins `topics` (resolved when the
    /// audience is walked, so a topic added to a category later is included).
    public var categories: [String]
    public var match: Match
    /// Only contacts whose language is this (or starts with it: `de` matches `de-AT`).
    public var locale: String?
    public var createdSince: Date?
    /// Only contacts with a grant given or renewed since then.
    public var changedSince: Date?

    public init(topics: [String], categories: [String] = [], match: Match = .any, locale: String? = nil,
                createdSince: Date? = nil, changedSince: Date? = nil) {
        self.topics = topics
        self.categories = categories
        self.match = match
        self.locale = locale
        self.createdSince = createdSince
        self.changedSince = changedSince
    }

    /// Whether `admits` can refuse anyone (otherwise every member of a page is in).
    var filtersMembers: Bool { match == .all || locale != nil || createdSince != nil || changedSince != nil }

    func admits(_ member: AudienceMember) -> Bool {
        if match == .all && !topics.allSatisfy({ member.grants[$0] != nil }) { return false }
        if let locale {
            guard let own = member.contact.locale?.lowercased(), own == locale.lowercased() || own.hasPrefix(locale.lowercased() + "-") else { return false }
        }
        if let createdSince, member.contact.createdAt < createdSince { return false }
        if let changedSince, !member.grants.values.contains(where: { $0.since >= changedSince }) { return false }
        return true
    }
}

extension Ledger {
    /// The most emails one batch check takes.
    public static let batchCheckLimit = 10_000

    /// The send-time check for many addresses and one topic, in one pass.
    public func check(emails: [EmailAddress], topicKey: String) async throws -> [CheckResult] {
        guard emails.count <= Self.batchCheckLimit else {
            throw DomainError.invalid(field: "emails", "at most \(Self.batchCheckLimit) addresses per call, not \(emails.count)")
        }
        let topic = try await checkedTopic(topicKey)
        let at = now
        let rows = try await checkRows(emails, topicKey: topicKey)
        // Addresses no contact has: suppressed (erased) or unknown. Each one's hash (an HMAC) made once.
        var hashes: [Int: Data] = [:]
        for i in emails.indices where rows[i] == nil { hashes[i] = suppressionHash(emails[i]) }
        let unknown = Array(Set(hashes.values))
        var suppressed: Set<Data> = []
        for start in stride(from: 0, to: unknown.count, by: 500) {
            suppressed.formUnion(try await store.suppressedHashes(Array(unknown[start..<min(start + 500, unknown.count)])))
        }
        return emails.indices.map { i in
            guard let row = rows[i] else {
                return CheckResult(allowed: false, reason: suppressed.contains(hashes[i]!) ? .suppressed : .unknown)
            }
            return Self.decide(row, topic: topic, at: at)
        }
    }

    /// The most addresses one read of the batch check looks up.
    static let checkRunLimit = 5_000

    /// The rows of many addresses, in the addresses' order (nil: no contact has it). The addresses
    /// are sorted and split into one run per read the store runs at once (`batchCheckReads`; runs
    /// of at least 250, at most `checkRunLimit`), each read in one statement on a connection of its
    /// own: each read then walks its own stretch of the address index, and its connection's page
    /// cache keeps what its lookups share. At a million contacts on SQLite, 10,000 addresses so read
    /// took 40-44 ms, against 55-63 ms read as 500-address chunks four at a time (whose lookups,
    /// spread over every reader, went to the OS for 2.6 pages each against 2.1). Each run's rows
    /// are put in its addresses' places by the task that read them (~2 ms for 5,000, beside the
    /// other run's), so the reads' answers are never merged into one table: merging two of 5,000
    /// and finding each address again in it took ~4.6 ms on one core after both reads had ended.
    func checkRows(_ emails: [EmailAddress], topicKey: String) async throws -> [CheckRow?] {
        // Each address once, in order; `place[i]`: where the i-th email's address is in `addresses`.
        let order = emails.indices.sorted { emails[$0].value < emails[$1].value }
        var addresses: [EmailAddress] = []
        addresses.reserveCapacity(emails.count)
        var place = [Int](repeating: 0, count: emails.count)
        for i in order {
            if addresses.last?.value != emails[i].value { addresses.append(emails[i]) }
            place[i] = addresses.count - 1
        }
        let reads = max(1, store.batchCheckReads)
        let runCount = max(1, min(reads, addresses.count / 250), (addresses.count + Self.checkRunLimit - 1) / Self.checkRunLimit)
        let runLength = max(1, (addresses.count + runCount - 1) / runCount)
        let starts = Array(stride(from: 0, to: addresses.count, by: runLength))
        let store = store
        let found = try await withThrowingTaskGroup(of: (Int, [CheckRow?]).self) { group in
            var next = 0, found = [CheckRow?](repeating: nil, count: addresses.count)
            func start() {
                let first = starts[next]
                let run = Array(addresses[first..<min(first + runLength, addresses.count)])
                group.addTask {
                    let rows = try await store.checkRows(emails: run, topicKey: topicKey)
                    return (first, run.map { rows[$0.value] })
                }
                next += 1
            }
            while next < min(reads, starts.count) { start() }
            for try await (first, rows) in group {
                found.replaceSubrange(first..<first + rows.count, with: rows)
                if next < starts.count { start() }
            }
            return found
        }
        return place.map { found[$0] }
    }

    static func decide(_ row: CheckRow, topic: Topic, at: Date) -> CheckResult {
        if topic.status == .retired {
            return CheckResult(allowed: false, reason: .retired, contactID: row.contactID, since: row.preference?.since)
        }
        guard let preference = row.preference else { return CheckResult(allowed: false, reason: .none, contactID: row.contactID) }
        let state = preference.effectiveState(at: at)
        let reason: CheckResult.Reason = switch state {
        case .granted: .granted
        case .none: .none
        case .pending: .pending
        case .withdrawn: .withdrawn
        case .expired: .expired
        }
        return CheckResult(allowed: state == .granted, reason: reason, contactID: row.contactID, since: preference.since, expiresAt: preference.expiresAt)
    }

    /// Checks an audience's topics (each must exist and be active: a retired
    /// topic sends nothing) and returns it with its categories' active topics
    /// added to `topics` (in the order given, then by category and key).
    @discardableResult
    public func validate(_ query: AudienceQuery) async throws -> AudienceQuery {
        var problems: [ValidationError] = []
        var resolved = query
        if !query.categories.isEmpty {
            let active = try await store.topics(includeRetired: false)
            for (i, category) in query.categories.enumerated() {
                let members = active.filter { $0.category == category }.map(\.key)
                if members.isEmpty {
                    problems.append(.init(field: "category[\(i)]", "no active topic is in category '\(category.prefix(64))'"))
                }
                resolved.topics += members.filter { !resolved.topics.contains($0) }
            }
            resolved.categories = []
        }
        if query.topics.isEmpty && query.categories.isEmpty { problems.append(.init(field: "topic", "name at least one topic or category")) }
        if resolved.topics.count > 100 { problems.append(.init(field: "topic", "at most 100 topics")) }
        for (i, key) in query.topics.enumerated() {
            guard (try? Topic.validateKey(key)) != nil, let topic = try await store.topic(key: key) else {
                problems.append(.init(field: "topic[\(i)]", "unknown topic '\(key.prefix(64))'"))
                continue
            }
            if !topic.isActive { problems.append(.init(field: "topic[\(i)]", "topic '\(key)' is retired: nobody may be sent it")) }
        }
        if let locale = query.locale, !(1...35).contains(locale.count) || !locale.allSatisfy({ $0.isASCII && ($0.isLetter || $0 == "-") }) {
            problems.append(.init(field: "locale", "'\(locale.prefix(40))' is not a language code such as de or en-GB"))
        }
        if !problems.isEmpty { throw DomainError.invalid(problems) }
        return resolved
    }

    /// Walks an audience a page at a time (memory stays flat however large it
    /// is), calling `body` with each page's members in contact-id order. The
    /// next page is read while `body` handles this one.
    public func audience(_ query: AudienceQuery, pageSize: Int = 1_000, _ body: ([AudienceMember]) async throws -> Void) async throws {
        let query = try await validate(query)
        let at = now
        let store = store
        var page = try await store.audiencePage(topics: query.topics, now: at, after: nil, limit: pageSize)
        // A page may hold fewer than `pageSize` contacts before the end (a store ends a page on a whole contact): only an empty one ends.
        while let last = page.last {
            async let following = store.audiencePage(topics: query.topics, now: at, after: last.contact.id, limit: pageSize)
            // Unfiltered, the page is handed on as it is (a filter copied every member).
            let members = query.filtersMembers ? page.filter(query.admits) : page
            if !members.isEmpty { try await body(members) }
            page = try await following
        }
    }

    /// Walks an audience as `audience` does, a page of bytes at a time (see `AudienceRowsPage`),
    /// for a query `validate` gave back. False, having read nothing, when the store cannot read
    /// so or the query filters members: the caller then walks `audience`.
    public func audienceRows(_ query: AudienceQuery, pageSize: Int = 1_000, _ body: (AudienceRowsPage) async throws -> Void) async throws -> Bool {
        guard let reader = store as? any AudienceRowsReader, !query.filtersMembers, query.categories.isEmpty else { return false }
        let at = now
        if let ranged = reader as? any AudienceRangeReader, ranged.audienceReadsAtOnce > 1 {
            try await Self.walkRanges(ranged, topics: query.topics, at: at, pageSize: pageSize, body)
            return true
        }
        var page = try await reader.audienceRowsPage(topics: query.topics, now: at, after: nil, limit: pageSize)
        while let last = page.rows.last {
            async let following = reader.audienceRowsPage(topics: query.topics, now: at, after: last.id, limit: pageSize)
            try await body(page)
            page = try await following
        }
        return true
    }

    /// How many ranges' ends one read of boundaries gives.
    static let boundariesPerRead = 16

    /// `audienceRows` on a store that reads ranges at once: after the first page, ranges of
    /// `pageSize` contacts, their ends read ahead (`contactBoundaries`), the first pages of the
    /// next `audienceReadsAtOnce` ranges read while this range's pages are handed on, in order. A
    /// range's page is read with room to spare (a quarter more contacts than the range has), so
    /// that it ends the range unless contacts were added to it meanwhile; those are read by the
    /// range's next pages, as `audienceRows` does. PostgreSQL sends a page while the server's event loop takes it in, the
    /// two taking turns more than running side by side; two pages at once keep both busy.
    /// No read outlives the walk: when it fails or is cancelled, the reads still out are
    /// cancelled and waited for (a PostgreSQL query runs to its end regardless) before it throws.
    /// (`rangeSize`, for tests: contacts per range, when not `pageSize`.)
    static func walkRanges(_ reader: any AudienceRangeReader, topics: [String], at: Date, pageSize: Int, rangeSize: Int? = nil,
                           _ body: (AudienceRowsPage) async throws -> Void) async throws {
        let step = max(1, rangeSize ?? pageSize), limit = max(1, pageSize) + max(1, pageSize) / 4 + 1, reads = reader.audienceReadsAtOnce
        // ends[j]: where range j ends (nil: the last, unbounded); range j starts after ends[j - 1].
        var ends: [UUID?] = [], endsComplete = false
        func boundaries(after: UUID?) -> Task<[UUID], any Error> {
            Task { try await reader.contactBoundaries(after: after, step: step, count: boundariesPerRead) }
        }
        // The first page as one page at a time reads it: an audience that fits in a page (a rare
        // topic, a small list) costs one query, as it did; 10 of 100,000 contacts had taken 25-35 ms
        // over 25 ranges against 17-21 ms in one query. A larger one is cut into ranges after it.
        let first = try await reader.audienceRowsPage(topics: topics, now: at, after: nil, through: nil, limit: pageSize)
        guard first.full, let origin = first.rows.last?.id else {
            if !first.rows.isEmpty { try await body(first) }
            return
        }
        var nextEnds: Task<[UUID], any Error>? = boundaries(after: origin)
        var ahead: [(range: Int, page: Task<AudienceRowsPage, any Error>)] = []
        var started = 0
        /// Starts reads of the next ranges' first pages until `reads` are out or every range is started.
        func startReads() async throws {
            while ahead.count < reads {
                while started >= ends.count, !endsComplete, let pending = nextEnds {
                    let found = try await pending.value
                    ends += found.map { $0 }
                    if found.count < boundariesPerRead {
                        ends.append(nil)
                        endsComplete = true
                        nextEnds = nil
                    } else {
                        nextEnds = boundaries(after: found.last)
                    }
                }
                guard started < ends.count else { return }
                try Task.checkCancellation()
                let after = started == 0 ? origin : ends[started - 1], through = ends[started]
                ahead.append((started, Task { try await reader.audienceRowsPage(topics: topics, now: at, after: after, through: through, limit: limit) }))
                started += 1
            }
        }
        do {
            try await startReads()
            try await body(first)
            while !ahead.isEmpty {
                let (range, read) = ahead.removeFirst()
                var page = try await withTaskCancellationHandler { try await read.value } onCancel: { read.cancel() }
                try await startReads()
                let through = ends[range]
                while page.full, let last = page.rows.last {
                    async let following = reader.audienceRowsPage(topics: topics, now: at, after: last.id, through: through, limit: limit)
                    try await body(page)
                    page = try await following
                }
                if !page.rows.isEmpty { try await body(page) }
            }
        } catch {
            nextEnds?.cancel()
            for read in ahead { read.page.cancel() }
            _ = try? await nextEnds?.value
            for read in ahead { _ = try? await read.page.value }
            throw error
        }
    }
}

extension Ledger {
    /// Records `expired` (source `system`) for every grant whose lifetime
    /// ended, up to `limit` at a time; returns how many were recorded. Safe to
    /// run again and from several instances at once: a grant already expired
    /// (or withdrawn or renewed meanwhile) records nothing.
    @discardableResult
    public func expireDue(limit: Int = 500) async throws -> Int {
        var recorded = 0
        for due in try await store.dueExpiries(now: now, limit: limit) {
            do {
                let result = try await recordChange(ChangeRequest(
                    contactID: due.contactID, changes: [TopicChange(topicKey: due.topicKey, intent: .expire)], source: .system, actor: .system,
                    occurredAt: due.expiresAt, changesField: "expiry"))
                recorded += result.events.count
            } catch DomainError.gone {
                continue // erased meanwhile
            }
        }
        return recorded
    }
}
