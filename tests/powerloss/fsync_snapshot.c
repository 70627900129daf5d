/*
 * fsync_snapshot.c: an LD_PRELOAD shim for tests/powerloss.rs.
 *
 * It interposes fsync(2) and fdatasync(2). After the real call has returned
 * successfully, if the descriptor is a regular file directly inside
 * $HOOKGATE_FSYNC_WATCH_DIR, the file's full current content is copied into
 * $HOOKGATE_FSYNC_SNAPSHOT_DIR under the same name (written to a temporary
 * name, then renamed), before the caller gets its answer. The snapshot
 * directory therefore holds every file exactly as of its own last fsync:
 * what a power loss that discards every write after the last fsync leaves
 * on disk. `-shm` files are skipped (SQLite rebuilds them), and so are
 * unlinked files.
 *
 * Directory entries: a name only disappears from the snapshot when the
 * watched directory itself is fsync'd after the file was unlinked (SQLite
 * fsyncs the directory when it creates a journal or WAL file). Until then
 * the deleted file, with its content as of its last fsync, stays: a power
 * loss may bring it back. (Without this, the rollback journal that SQLite
 * writes and deletes while it switches a new database to WAL mode would
 * come back from the dead as a hot journal and roll the database back to
 * zero pages, which cannot happen on a POSIX file system once the
 * directory was synced.) New names are never added by a directory sync:
 * a file that was never fsync'd has no content to restore.
 *
 * When $HOOKGATE_FSYNC_LOG names a file, one line is appended per snapshot
 * ("snapshot <name> <bytes>"), one per name a directory sync removed
 * ("unlink <name>") and one "ERROR ..." line per failure, so the test can
 * count snapshots and refuse to pass on a snapshot that was not taken.
 *
 * Build: cc -shared -fPIC -O2 -o shim.so fsync_snapshot.c -ldl -lpthread
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static pthread_mutex_t snap_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t init_once = PTHREAD_ONCE_INIT;

static int (*real_fsync)(int);
static int (*real_fdatasync)(int);

static int enabled;
static char watch_dir[PATH_MAX];
static size_t watch_len;
static char snap_dir[PATH_MAX];
static int log_fd = -1;

static void init(void) {
    /* The POSIX idiom for a function pointer from dlsym. */
    *(void **)&real_fsync = dlsym(RTLD_NEXT, "fsync");
    *(void **)&real_fdatasync = dlsym(RTLD_NEXT, "fdatasync");
    const char *log = getenv("HOOKGATE_FSYNC_LOG");
    if (log && *log) {
        log_fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    }
    const char *watch = getenv("HOOKGATE_FSYNC_WATCH_DIR");
    const char *snap = getenv("HOOKGATE_FSYNC_SNAPSHOT_DIR");
    if (!watch || !snap || !realpath(watch, watch_dir) || !realpath(snap, snap_dir)) {
        if (log_fd >= 0) {
            dprintf(log_fd, "ERROR watch or snapshot directory unset or missing\n");
        }
        return;
    }
    watch_len = strlen(watch_dir);
    enabled = 1;
}

static void log_line(const char *fmt, ...) {
    if (log_fd < 0) {
        return;
    }
    char buf[3 * PATH_MAX];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n > 0) {
        ssize_t w = write(log_fd, buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
        (void)w;
    }
}

static int ends_with(const char *s, const char *suffix) {
    size_t ls = strlen(s), lx = strlen(suffix);
    return ls >= lx && strcmp(s + ls - lx, suffix) == 0;
}

/* Copies the file behind `fd` into the snapshot dir. Called with snap_lock held. */
static void copy_locked(int fd, const char *name) {
    char proc[64], tmp[2 * PATH_MAX + 32], dst[2 * PATH_MAX + 32];
    snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
    snprintf(tmp, sizeof tmp, "%s/.%s.snapshot-tmp", snap_dir, name);
    snprintf(dst, sizeof dst, "%s/%s", snap_dir, name);
    /* Re-open through /proc: the same inode even if the fd is write-only. */
    int in = open(proc, O_RDONLY | O_CLOEXEC);
    if (in < 0) {
        log_line("ERROR open %s: %s\n", name, strerror(errno));
        return;
    }
    int out = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (out < 0) {
        log_line("ERROR create %s: %s\n", tmp, strerror(errno));
        close(in);
        return;
    }
    static char buf[1 << 16];
    long long total = 0;
    for (;;) {
        ssize_t r = read(in, buf, sizeof buf);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r < 0) {
            log_line("ERROR read %s: %s\n", name, strerror(errno));
            goto fail;
        }
        if (r == 0) {
            break;
        }
        for (ssize_t off = 0; off < r;) {
            ssize_t w = write(out, buf + off, (size_t)(r - off));
            if (w < 0 && errno == EINTR) {
                continue;
            }
            if (w <= 0) {
                log_line("ERROR write %s: %s\n", tmp, strerror(errno));
                goto fail;
            }
            off += w;
        }
        total += r;
    }
    close(in);
    if (close(out) != 0) {
        log_line("ERROR close %s: %s\n", tmp, strerror(errno));
        unlink(tmp);
        return;
    }
    if (rename(tmp, dst) != 0) {
        log_line("ERROR rename %s: %s\n", tmp, strerror(errno));
        unlink(tmp);
        return;
    }
    log_line("snapshot %s %lld\n", name, total);
    return;
fail:
    close(in);
    close(out);
    unlink(tmp);
}

static void snapshot(int fd) {
    if (!enabled) {
        return;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_nlink == 0) {
        return;
    }
    char link[64], path[PATH_MAX];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n <= 0) {
        return;
    }
    path[n] = '\0';
    if (strncmp(path, watch_dir, watch_len) != 0 || path[watch_len] != '/') {
        return;
    }
    const char *name = path + watch_len + 1;
    if (*name == '\0' || strchr(name, '/') || ends_with(name, "-shm") ||
        ends_with(name, " (deleted)")) {
        return;
    }
    pthread_mutex_lock(&snap_lock);
    copy_locked(fd, name);
    pthread_mutex_unlock(&snap_lock);
}

/* The names in the watched directory, read before a sync of it. */
struct names {
    char **v;
    size_t n;
};

static void names_free(struct names *ns) {
    for (size_t i = 0; i < ns->n; i++) {
        free(ns->v[i]);
    }
    free(ns->v);
    ns->v = NULL;
    ns->n = 0;
}

static int names_has(const struct names *ns, const char *name) {
    for (size_t i = 0; i < ns->n; i++) {
        if (strcmp(ns->v[i], name) == 0) {
            return 1;
        }
    }
    return 0;
}

static int list_dir(const char *dir, struct names *out) {
    DIR *d = opendir(dir);
    if (!d) {
        return -1;
    }
    size_t cap = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (out->n == cap) {
            cap = cap ? cap * 2 : 16;
            char **v = realloc(out->v, cap * sizeof *v);
            if (!v) {
                closedir(d);
                return -1;
            }
            out->v = v;
        }
        if (!(out->v[out->n] = strdup(e->d_name))) {
            closedir(d);
            return -1;
        }
        out->n++;
    }
    closedir(d);
    return 0;
}

/* Whether `fd` is the watched directory. */
static int is_watch_dir(int fd) {
    struct stat st, wst;
    return enabled && fstat(fd, &st) == 0 && S_ISDIR(st.st_mode) && stat(watch_dir, &wst) == 0 &&
           st.st_dev == wst.st_dev && st.st_ino == wst.st_ino;
}

/* The watched directory was synced: every name unlinked before the sync
 * (absent from `before`) is durably gone, from the snapshot too. */
static void dir_synced(const struct names *before) {
    pthread_mutex_lock(&snap_lock);
    struct names snap = {0};
    if (list_dir(snap_dir, &snap) != 0) {
        log_line("ERROR list %s: %s\n", snap_dir, strerror(errno));
    }
    for (size_t i = 0; i < snap.n; i++) {
        const char *name = snap.v[i];
        if (name[0] == '.' || names_has(before, name)) {
            continue;
        }
        char path[2 * PATH_MAX + 32];
        snprintf(path, sizeof path, "%s/%s", snap_dir, name);
        if (unlink(path) == 0) {
            log_line("unlink %s\n", name);
        } else {
            log_line("ERROR unlink %s: %s\n", path, strerror(errno));
        }
    }
    names_free(&snap);
    pthread_mutex_unlock(&snap_lock);
}

static int intercept(int (*real)(int), int fd) {
    pthread_once(&init_once, init);
    struct names before = {0};
    int dir = is_watch_dir(fd);
    if (dir && list_dir(watch_dir, &before) != 0) {
        log_line("ERROR list %s: %s\n", watch_dir, strerror(errno));
        names_free(&before);
        dir = 0;
    }
    int rc = real(fd);
    int saved = errno;
    if (rc == 0 && dir) {
        dir_synced(&before);
    } else if (rc == 0) {
        snapshot(fd);
    }
    names_free(&before);
    errno = saved;
    return rc;
}

int fsync(int fd) {
    pthread_once(&init_once, init);
    return intercept(real_fsync, fd);
}

int fdatasync(int fd) {
    pthread_once(&init_once, init);
    return intercept(real_fdatasync, fd);
}
