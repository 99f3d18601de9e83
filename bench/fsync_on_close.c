/* LD_PRELOAD shim for benchmarks: make a program durable the way the edge is.
 *
 * On close() or fclose() of a regular file that was open for writing, fsync the file
 * and then its folder, before the close returns. DCMTK storescp writes each received
 * instance, closes it and only then sends the C-STORE response, so under this shim
 * its Success, like the edge's, comes after the instance's bytes and name are on
 * disk: bench/ingest.py's "storescp + fsync" peer. (The edge also commits a journal
 * row; storescp keeps no journal.) Built by bench/ingest.py with the system cc. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int (*real_close)(int) = NULL;
static int (*real_fclose)(FILE *) = NULL;

static void make_durable(int fd) {
    if (!real_close) real_close = (int (*)(int))dlsym(RTLD_NEXT, "close");
    struct stat st;
    int flags = fcntl(fd, F_GETFL);
    if (flags != -1 && (flags & O_ACCMODE) != O_RDONLY && fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) {
        char link[64], path[PATH_MAX];
        fsync(fd);
        snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
        ssize_t n = readlink(link, path, sizeof path - 1);
        if (n > 0) {
            path[n] = '\0';
            int dir = open(dirname(path), O_RDONLY | O_DIRECTORY);
            if (dir >= 0) { fsync(dir); real_close(dir); }
        }
    }
}

int close(int fd) {
    make_durable(fd);
    return real_close(fd);
}

int fclose(FILE *stream) {
    if (!real_fclose) real_fclose = (int (*)(FILE *))dlsym(RTLD_NEXT, "fclose");
    if (stream) {
        fflush(stream);
        make_durable(fileno(stream));
    }
    return real_fclose(stream);
}
