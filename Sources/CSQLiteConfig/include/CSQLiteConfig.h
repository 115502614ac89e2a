#ifndef ASSENT_CSQLITECONFIG_H
#define ASSENT_CSQLITECONFIG_H

/// Turns off SQLite's memory statistics for the whole process; returns SQLite's result code.
/// `sqlite3_config` is variadic, so Swift cannot call it: this wrapper is why this target exists.
/// It works only before SQLite is first used in the process (SQLITE_MISUSE after that).
int assent_sqlite_disable_memory_statistics(void);

#endif
