/* agentsh exec server: the sandbox's keep-alive, and how ab-exec runs commands in it.
 *
 *   execd SOCKET
 *
 * Started by the container itself (under --init), so every command it forks
 * inherits the container's namespaces, cgroup, seccomp profile,
 * capabilities, no-new-privileges and user: nothing is entered from the
 * host. It listens on SOCKET (in a host directory mounted into the sandbox)
 * and, per connection, forks a handler that runs one command.
 *
 * Frames, both ways: TYPE (1 byte) LENGTH (4 bytes, big-endian) PAYLOAD.
 *   server -> client, first: the hello line HELLO (no frame).
 *   client -> server: 'R' request, first; without a terminal it carries the
 *     command's stdin, stdout and stderr as SCM_RIGHTS (never a terminal:
 *     the client passes pipes instead). Payload: NUL-terminated fields
 *     "tty=0|1" "rows=N" "cols=N" "cwd=DIR" "argc=N" ARGV... ENV("K=V")...,
 *     the ENV entries added to the server's own environment (the container's).
 *   client -> server: 'I' input and 'E' end of input (terminal only),
 *     'W' 4 bytes rows,cols (terminal only), 'S' 1 byte signal number.
 *   server -> client: 'O' output (terminal only), 'X' 4 bytes exit status
 *     (the command's, or 128+N when signal N ended it; 126/127 when it
 *     could not start), last.
 * The client is the host; the server trusts nothing it says beyond running
 * the command as the sandbox's own user, which any process inside can do.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#define HELLO "agentsh-execd 1\n"
#define MAX_REQUEST (4 << 20)
#define MAX_FIELDS 65536

static int wake[2] = {-1, -1}; /* SIGCHLD self-pipe of a handler */

static int write_all(int fd, const void *buf, size_t len) {
    const char *p = buf;
    while (len) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static int read_all(int fd, void *buf, size_t len) {
    char *p = buf;
    while (len) {
        ssize_t n = read(fd, p, len);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static int send_frame(int fd, char type, const void *data, uint32_t len) {
    unsigned char head[5] = {(unsigned char)type, len >> 24, len >> 16, len >> 8, len};
    if (write_all(fd, head, 5) < 0) return -1;
    return len ? write_all(fd, data, len) : 0;
}

static void on_child(int sig) {
    (void)sig;
    int saved = errno;
    if (wake[1] >= 0) (void)!write(wake[1], "", 1);
    errno = saved;
}

static const char *field(char **fields, int n, const char *key) {
    size_t k = strlen(key);
    for (int i = 0; i < n; i++)
        if (strncmp(fields[i], key, k) == 0 && fields[i][k] == '=') return fields[i] + k + 1;
    return NULL;
}

static void child_exec(char **argv, char **envp, const char *cwd, int tty_slave, int fds[3]) {
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    for (int s = 1; s < NSIG; s++) signal(s, SIG_DFL);
    setsid();
    if (tty_slave >= 0) {
        ioctl(tty_slave, TIOCSCTTY, 0);
        dup2(tty_slave, 0);
        dup2(tty_slave, 1);
        dup2(tty_slave, 2);
    } else {
        for (int i = 0; i < 3; i++) {
            if (fds[i] < 0) continue;
            if (fds[i] != i) dup2(fds[i], i);
            else fcntl(i, F_SETFD, 0);
        }
    }
    for (int fd = 3; fd < 1024; fd++) close(fd);
    if (cwd && *cwd && chdir(cwd) < 0) {
        dprintf(2, "agentsh-execd: cannot enter %s: %s\n", cwd, strerror(errno));
        _exit(126);
    }
    for (char **e = envp; *e; e++) /* the sandbox's own environment, plus what the request sets */
        if (strchr(*e, '=')) putenv(*e);
    execvp(argv[0], argv);
    int e = errno;
    if (e == ENOENT) {
        dprintf(2, "agentsh-run: not found: %s\n", argv[0]);
        _exit(127);
    }
    dprintf(2, "agentsh-execd: %s: %s\n", argv[0], strerror(e));
    _exit(126);
}

static int handle(int conn) {
    signal(SIGCHLD, SIG_DFL);
    signal(SIGPIPE, SIG_IGN);
    if (write_all(conn, HELLO, sizeof HELLO - 1) < 0) return 1;

    unsigned char head[5];
    int fds[3] = {-1, -1, -1};
    char control[CMSG_SPACE(3 * sizeof(int))];
    struct iovec iov = {head, 5};
    struct msghdr msg = {0};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    ssize_t got = recvmsg(conn, &msg, MSG_CMSG_CLOEXEC | MSG_WAITALL);
    if (got != 5 || head[0] != 'R') return 1;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
            int n = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
            int *passed = (int *)CMSG_DATA(c);
            for (int i = 0; i < n; i++) {
                if (i < 3) fds[i] = passed[i];
                else close(passed[i]);
            }
        }
    }
    uint32_t len = (uint32_t)head[1] << 24 | head[2] << 16 | head[3] << 8 | head[4];
    if (len == 0 || len > MAX_REQUEST) return 1;
    char *buf = malloc(len + 1);
    if (!buf || read_all(conn, buf, len) < 0) return 1;
    buf[len] = 0;

    char **fields = calloc(MAX_FIELDS + 1, sizeof(char *));
    int nf = 0;
    for (char *p = buf; p < buf + len && nf < MAX_FIELDS; p += strlen(p) + 1) fields[nf++] = p;
    const char *tty = field(fields, nf, "tty"), *cwd = field(fields, nf, "cwd"), *argc_s = field(fields, nf, "argc");
    int argc = argc_s ? atoi(argc_s) : 0;
    int first = 0;
    while (first < nf && strncmp(fields[first], "argc=", 5) != 0) first++;
    first++;
    if (argc <= 0 || first + argc > nf) return 1;
    char **argv = calloc((size_t)argc + 1, sizeof(char *));
    for (int i = 0; i < argc; i++) argv[i] = fields[first + i];
    char **envp = &fields[first + argc];
    fields[nf] = NULL;

    int use_tty = tty && strcmp(tty, "1") == 0;
    int master = -1, slave = -1;
    if (use_tty) {
        master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
        if (master < 0 || grantpt(master) < 0 || unlockpt(master) < 0) return 1;
        slave = open(ptsname(master), O_RDWR | O_NOCTTY | O_CLOEXEC);
        if (slave < 0) return 1;
        const char *rows = field(fields, nf, "rows"), *cols = field(fields, nf, "cols");
        struct winsize ws = {0};
        ws.ws_row = rows ? (unsigned short)atoi(rows) : 24;
        ws.ws_col = cols ? (unsigned short)atoi(cols) : 80;
        ioctl(slave, TIOCSWINSZ, &ws);
    }

    if (pipe2(wake, O_CLOEXEC | O_NONBLOCK) < 0) return 1;
    struct sigaction sa = {0};
    sa.sa_handler = on_child;
    sa.sa_flags = SA_RESTART | SA_NOCLDSTOP;
    sigaction(SIGCHLD, &sa, NULL);

    pid_t pid = fork();
    if (pid < 0) return 1;
    if (pid == 0) child_exec(argv, envp, cwd, slave, fds);
    for (int i = 0; i < 3; i++)
        if (fds[i] >= 0) close(fds[i]);
    if (slave >= 0) close(slave);

    int status = 0, done = 0, client_open = 1, out_open = master >= 0;
    char io[65536];
    while (!done || out_open) {
        struct pollfd p[3];
        int n = 0, iconn = -1, imaster = -1;
        p[n].fd = wake[0], p[n].events = POLLIN, n++;
        if (client_open) iconn = n, p[n].fd = conn, p[n].events = POLLIN, n++;
        if (out_open) imaster = n, p[n].fd = master, p[n].events = POLLIN, n++;
        if (poll(p, (nfds_t)n, done ? 200 : -1) < 0) {
            if (errno == EINTR) continue;
            break;
        }
        if (p[0].revents & POLLIN) {
            while (read(wake[0], io, sizeof io) > 0) {}
            if (!done && waitpid(pid, &status, WNOHANG) == pid) done = 1;
        }
        if (imaster >= 0 && p[imaster].revents) {
            ssize_t r = read(master, io, sizeof io);
            if (r > 0) {
                if (client_open && send_frame(conn, 'O', io, (uint32_t)r) < 0) client_open = 0;
            } else if (r < 0 && errno == EINTR) {
            } else {
                out_open = 0; /* EIO: every writer of the terminal is gone */
            }
        } else if (done && out_open && imaster >= 0 && !(p[imaster].revents)) {
            out_open = 0; /* the command ended and the terminal is quiet */
        }
        if (iconn >= 0 && p[iconn].revents) {
            unsigned char h[5];
            if (read_all(conn, h, 5) < 0) {
                client_open = 0;
                if (!done) kill(-pid, SIGHUP); /* the user's side went away: like a hang-up */
                continue;
            }
            uint32_t l = (uint32_t)h[1] << 24 | h[2] << 16 | h[3] << 8 | h[4];
            if (l > sizeof io || (l && read_all(conn, io, l) < 0)) {
                client_open = 0;
                if (!done) kill(-pid, SIGHUP);
                continue;
            }
            if (h[0] == 'S' && l == 1 && !done) {
                kill(-pid, io[0]);
            } else if (h[0] == 'W' && l == 4 && master >= 0) {
                struct winsize ws = {0};
                ws.ws_row = (unsigned short)((unsigned char)io[0] << 8 | (unsigned char)io[1]);
                ws.ws_col = (unsigned short)((unsigned char)io[2] << 8 | (unsigned char)io[3]);
                ioctl(master, TIOCSWINSZ, &ws);
            } else if (h[0] == 'I' && master >= 0) {
                write_all(master, io, l);
            } else if (h[0] == 'E' && master >= 0) {
                struct termios t;
                char eof = tcgetattr(master, &t) == 0 ? (char)t.c_cc[VEOF] : 4;
                write_all(master, &eof, 1);
            }
        }
    }
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : WIFSIGNALED(status) ? 128 + WTERMSIG(status) : 1;
    unsigned char c[4] = {(unsigned char)(code >> 24), (unsigned char)(code >> 16), (unsigned char)(code >> 8),
                          (unsigned char)code};
    if (client_open) send_frame(conn, 'X', c, 4);
    return 0;
}

static volatile sig_atomic_t stop;
static void on_term(int sig) {
    (void)sig;
    stop = 1;
}

int main(int argc, char **argv) {
    if (argc != 2 || strlen(argv[1]) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
        fprintf(stderr, "usage: execd SOCKET\n");
        return 2;
    }
    signal(SIGCHLD, SIG_IGN); /* handlers are reaped by the kernel */
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa = {0};
    sa.sa_handler = on_term;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);

    int srv = -1;
    struct sockaddr_un addr = {0};
    addr.sun_family = AF_UNIX;
    strcpy(addr.sun_path, argv[1]);
    srv = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    unlink(argv[1]);
    mode_t umask_was = umask(0); /* the socket's mode, below; commands get the container's umask back */
    int bound = srv >= 0 && bind(srv, (struct sockaddr *)&addr, sizeof addr) == 0;
    umask(umask_was);
    if (!bound || listen(srv, 128) < 0) {
        /* no socket (a host dir the sandbox's user cannot write): stay the keep-alive only */
        if (srv >= 0) close(srv);
        while (!stop) pause();
        return 0;
    }
    chmod(argv[1], 0666); /* the host directory holding it is the user's, mode 0700 */
    /* A replacement sandbox binds the same path while this one still runs (ab-up makes the new one before
     * it removes the old): at exit, remove the socket only while it is still this server's own. */
    struct stat own;
    int have_own = stat(argv[1], &own) == 0;
    while (!stop) {
        int conn = accept4(srv, NULL, NULL, SOCK_CLOEXEC);
        if (conn < 0) continue;
        pid_t pid = fork();
        if (pid == 0) {
            close(srv);
            signal(SIGTERM, SIG_DFL);
            signal(SIGINT, SIG_DFL);
            signal(SIGHUP, SIG_DFL);
            _exit(handle(conn));
        }
        close(conn);
    }
    struct stat now;
    if (have_own && stat(argv[1], &now) == 0 && now.st_ino == own.st_ino && now.st_dev == own.st_dev)
        unlink(argv[1]);
    return 0;
}
