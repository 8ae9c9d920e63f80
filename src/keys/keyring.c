/*-------------------------------------------------------------------------
 *
 * keyring.c
 *	  The keyring on disk and the providers of the cluster key.
 *
 *	  $PGDATA/pg_fieldcrypt/keyring holds the FcDbKeys of every database,
 *	  sealed with AES-256-GCM under the cluster key-encryption key (KEK):
 *
 *		"FCKR" | format u32 | payload length u32 | nonce[12] | tag[16] | ct
 *
 *	  The first 12 bytes are authenticated as associated data.  The file is
 *	  only ever replaced whole: written to keyring.tmp, fsynced and renamed
 *	  with durable_rename(), so a crash leaves the old or the new keyring.
 *	  Behind a tenant key header ("FCKT", tenant.c) the same image is sealed
 *	  under the tenant's data KEK instead: the tenant layer (tenant.c)
 *	  strips its header and calls this file for what is behind it; this
 *	  file knows nothing of tenants.
 *
 *	  The KEK comes from fieldcrypt.key_provider: "file" (a random key made
 *	  at the first start, never over an existing keyring) or "command" (the
 *	  hex output of fieldcrypt.key_command).  A provider that fails never
 *	  stops the server: the caller records why and refuses key operations.
 *
 *	  Where the key file is (fieldcrypt.key_file empty): a backup of the data
 *	  directory must not carry the key that unseals the keyring it holds.
 *	  When postgresql.conf lives outside the data directory (Debian's
 *	  /etc/postgresql/15/main), the key is fieldcrypt_cluster.key beside it.
 *	  Otherwise there is no place outside we may choose alone: the key is
 *	  pg_fieldcrypt/cluster.key as in 1.0, and every start says so with a
 *	  WARNING naming the way out.  A key made by 1.0 in the data directory
 *	  is still used where it is (never moved, never duplicated); finding a
 *	  key in both places is a provider failure, not a guess.  Where the key
 *	  was taken from is kept for fieldcrypt.key_status (fc_kek_location):
 *	  set in the postmaster, inherited by every backend it forks.
 *
 *	  Reading and the providers run in the postmaster (shmem startup);
 *	  writing runs in a backend holding the keystore lock exclusively.
 *
 * src/keys/keyring.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "miscadmin.h"
#include "storage/fd.h"
#include "utils/guc.h"

#include "keys/keyring.h"

#define KEYRING_MAGIC		"FCKR"
#define KEYRING_FORMAT		1
#define KEYRING_HDR_AAD		12
#define KEYRING_HDR_LEN		(KEYRING_HDR_AAD + FC_NONCE_LEN + FC_TAG_LEN)
#define KEY_HEX_LEN			(FC_KEY_LEN * 2)

int			fc_key_provider = FC_PROVIDER_FILE;
char	   *fc_key_file = NULL;
char	   *fc_key_command = NULL;
int			fc_key_command_timeout = 30;

static bool parse_hex_key(const char *text, size_t len, uint8 *kek);
static bool run_key_command(uint8 *kek, char *why, size_t whylen);
static bool file_provider(const char *path, uint8 *kek, char *why, size_t whylen);
static bool in_data_directory(const char *path);
static bool file_exists(const char *path);
static bool same_file(const char *a, const char *b);
static bool resolve_key_file(char *path, size_t pathlen, char *why, size_t whylen);
static void warn_key_placement(const char *path);

/* Where the cluster key came from at start (see fc_kek_location). */
static bool kek_place_known = false;
static char kek_place[MAXPGPATH];
static int	kek_place_inside = -1;	/* -1: not a file of ours */

/* Decode exactly 64 hex digits (surrounding white space allowed). */
static bool
parse_hex_key(const char *text, size_t len, uint8 *kek)
{
	size_t		start = 0,
				end = len;

	while (start < end && isspace((unsigned char) text[start]))
		start++;
	while (end > start && isspace((unsigned char) text[end - 1]))
		end--;
	if (end - start != KEY_HEX_LEN)
		return false;
	for (int i = 0; i < FC_KEY_LEN; i++)
	{
		int			v = 0;

		for (int j = 0; j < 2; j++)
		{
			char		c = text[start + i * 2 + j];

			v <<= 4;
			if (c >= '0' && c <= '9')
				v |= c - '0';
			else if (c >= 'a' && c <= 'f')
				v |= c - 'a' + 10;
			else if (c >= 'A' && c <= 'F')
				v |= c - 'A' + 10;
			else
				return false;
		}
		kek[i] = (uint8) v;
	}
	return true;
}

/* Read a file into palloc'd memory; false with errno set on failure. */
bool
fc_keyring_read_file(const char *path, char **data, size_t *len)
{
	int			fd = open(path, O_RDONLY | PG_BINARY);
	struct stat st;
	size_t		done = 0;

	if (fd < 0)
		return false;
	if (fstat(fd, &st) != 0 || st.st_size > 64 * 1024 * 1024)
	{
		close(fd);
		return false;
	}
	*data = palloc(st.st_size + 1);
	while (done < (size_t) st.st_size)
	{
		ssize_t		n = read(fd, *data + done, st.st_size - done);

		if (n <= 0)
			break;
		done += n;
	}
	close(fd);
	(*data)[done] = '\0';
	*len = done;
	return true;
}

/*
 * Whether path (absolute, or relative to the data directory) lies inside
 * the data directory, symbolic links resolved: a file that does not exist
 * yet is judged by its directory.
 */
static bool
in_data_directory(const char *path)
{
	char		abs[MAXPGPATH];
	char		real[PATH_MAX];
	char		real_data[PATH_MAX];

	if (is_absolute_path(path))
		strlcpy(abs, path, sizeof(abs));
	else
		join_path_components(abs, DataDir, path);
	canonicalize_path(abs);
	if (realpath(abs, real) == NULL)
	{
		char		dir[MAXPGPATH];

		strlcpy(dir, abs, sizeof(dir));
		get_parent_directory(dir);
		if (realpath(dir, real) == NULL)
			strlcpy(real, dir, sizeof(real));
	}
	if (realpath(DataDir, real_data) == NULL)
		strlcpy(real_data, DataDir, sizeof(real_data));
	return path_is_prefix_of_path(real_data, real);
}

/* Whether something is at path (a file we cannot stat counts as there). */
static bool
file_exists(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 || errno != ENOENT;
}

/* Whether two paths name the same existing file (one may link to the other). */
static bool
same_file(const char *a, const char *b)
{
	struct stat sa;
	struct stat sb;

	return stat(a, &sa) == 0 && stat(b, &sb) == 0 &&
		sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

/*
 * The key file of provider "file" into path: fieldcrypt.key_file if set;
 * else fieldcrypt_cluster.key beside postgresql.conf when that lies outside
 * the data directory, unless only a key made by 1.0 exists (kept where it
 * is); else the key file in the data directory.  False, with why, if a key
 * exists in both default places.
 */
static bool
resolve_key_file(char *path, size_t pathlen, char *why, size_t whylen)
{
	char		conf_dir[MAXPGPATH];

	if (fc_key_file && fc_key_file[0])
	{
		strlcpy(path, fc_key_file, pathlen);
		return true;
	}
	strlcpy(path, FC_LEGACY_KEY_FILE, pathlen);
	if (ConfigFileName == NULL)
		return true;
	strlcpy(conf_dir, ConfigFileName, sizeof(conf_dir));
	get_parent_directory(conf_dir);
	if (conf_dir[0] == '\0' || in_data_directory(conf_dir))
		return true;

	join_path_components(path, conf_dir, FC_CONF_KEY_FILE_NAME);
	if (file_exists(path) && file_exists(FC_LEGACY_KEY_FILE) && !same_file(path, FC_LEGACY_KEY_FILE))
	{
		snprintf(why, whylen,
				 "cluster key files exist in two places, \"%s\" and \"%s\": "
				 "keep only the one that unseals the keyring", path, FC_LEGACY_KEY_FILE);
		return false;
	}
	if (file_exists(FC_LEGACY_KEY_FILE))
		strlcpy(path, FC_LEGACY_KEY_FILE, pathlen);
	return true;
}

/*
 * At start, after the provider ran: a key file inside the data directory
 * (path, NULL for provider "command") travels with every backup, and so
 * does a 1.0 key file left behind when the key is taken from elsewhere.
 * Say so, naming the way out.  Never names or shows key bytes.
 */
static void
warn_key_placement(const char *path)
{
	struct stat st;

	if (path && kek_place_inside == 1 && stat(path, &st) == 0)
		ereport(WARNING,
				(errmsg("fieldcrypt: the cluster key is stored inside the data directory, in \"%s\"",
						path),
				 errdetail("Every base backup or copy of the data directory carries this key next to "
						   "the keyring it unseals: whoever obtains one can read all encrypted data."),
				 errhint("Move the file to a directory outside the data directory that its backups "
						 "do not include and set fieldcrypt.key_file to its new path, or use "
						 "fieldcrypt.key_provider = command; then restart the server.")));
	if (stat(FC_LEGACY_KEY_FILE, &st) != 0 || (path && same_file(path, FC_LEGACY_KEY_FILE)))
		return;
	ereport(WARNING,
			(errmsg("fieldcrypt: an unused cluster key file remains in the data directory, \"%s\"",
					FC_LEGACY_KEY_FILE),
			 errdetail("The cluster key is taken from %s%s%s, but every backup of the data "
					   "directory still carries this file.",
					   path ? "\"" : "", path ? path : "fieldcrypt.key_command", path ? "\"" : ""),
			 errhint("Delete \"%s\" once the keyring loads with the key from its new place.",
					 FC_LEGACY_KEY_FILE)));
}

/*
 * Where the cluster key was taken from at start: the key file (as
 * configured; relative paths are in the data directory) and whether it is
 * inside the data directory, or "fieldcrypt.key_command" with *inside
 * unknown (*inside_known false).  NULL before the provider ran or when the
 * key file could not be chosen.
 */
const char *
fc_kek_location(bool *inside_known, bool *inside)
{
	*inside_known = kek_place_inside >= 0;
	*inside = kek_place_inside == 1;
	return kek_place_known ? kek_place : NULL;
}

/*
 * The key file of provider "file" chosen at start: what FC_DEFAULT_KEY_FILE
 * means now that the default depends on where postgresql.conf is.
 */
const char *
fc_default_key_file(void)
{
	if (kek_place_known && kek_place_inside >= 0 && !(fc_key_file && fc_key_file[0]))
		return kek_place;
	return FC_LEGACY_KEY_FILE;
}

/* Provider "file": read the key file, or create it on a cluster with no keyring. */
static bool
file_provider(const char *path, uint8 *kek, char *why, size_t whylen)
{
	char	   *data;
	size_t		len;
	char		hex[KEY_HEX_LEN + 2];
	int			fd;
	struct stat st;

	if (stat(path, &st) == 0 && (st.st_mode & (S_IRWXG | S_IRWXO)) != 0)
	{
		snprintf(why, whylen,
				 "key file \"%s\" has group or world access; it must be mode 0600 or stricter",
				 path);
		return false;
	}
	if (fc_keyring_read_file(path, &data, &len))
	{
		bool		ok = parse_hex_key(data, len, kek);

		explicit_bzero(data, len);
		pfree(data);
		if (!ok)
			snprintf(why, whylen, "key file \"%s\" does not hold 64 hexadecimal digits", path);
		return ok;
	}
	if (errno != ENOENT)
	{
		snprintf(why, whylen, "could not read key file \"%s\": %m", path);
		return false;
	}
	if (stat(FC_KEYRING_FILE, &st) == 0)
	{
		snprintf(why, whylen,
				 "key file \"%s\" is missing but a keyring exists; "
				 "refusing to create a new key over existing data", path);
		return false;
	}

	/* First start: make a random key, mode 0600, durably. */
	if (!fc_random_bytes(kek, FC_KEY_LEN))
	{
		snprintf(why, whylen, "could not generate a cluster key: %s", fc_crypto_last_error());
		return false;
	}
	for (int i = 0; i < FC_KEY_LEN; i++)
		sprintf(hex + i * 2, "%02x", kek[i]);
	hex[KEY_HEX_LEN] = '\n';
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | PG_BINARY, S_IRUSR | S_IWUSR);
	if (fd < 0 || write(fd, hex, KEY_HEX_LEN + 1) != KEY_HEX_LEN + 1 || pg_fsync(fd) != 0)
	{
		snprintf(why, whylen, "could not create key file \"%s\": %m", path);
		if (fd >= 0)
			close(fd);
		explicit_bzero(hex, sizeof(hex));
		explicit_bzero(kek, FC_KEY_LEN);
		return false;
	}
	close(fd);
	explicit_bzero(hex, sizeof(hex));
	{
		char		dir[MAXPGPATH];

		strlcpy(dir, path, sizeof(dir));
		get_parent_directory(dir);
		fsync_fname_ext(dir[0] ? dir : ".", true, false, LOG);
	}
	ereport(LOG,
			(errmsg("fieldcrypt: created a new cluster key in \"%s\"", path)));
	return true;
}

/*
 * Run a shell command (/bin/sh -c) and collect at most outsize - 1 bytes of
 * its standard output into out (NUL-terminated, *outlen bytes), killing it
 * after fieldcrypt.key_command_timeout.  name (the parameter holding the
 * command) is used in the reason written to why on failure.  The caller
 * zeroes out.
 */
bool
fc_run_command(const char *command, const char *name, char *out, size_t outsize,
			   size_t *outlen, char *why, size_t whylen)
{
	int			pipefd[2];
	pid_t		pid;
	size_t		got = 0;
	int			status;
	bool		timed_out = false;
	TimestampTz deadline;

	*outlen = 0;
	if (command == NULL || command[0] == '\0')
	{
		snprintf(why, whylen, "%s is empty", name);
		return false;
	}
	if (pipe(pipefd) != 0)
	{
		snprintf(why, whylen, "could not create pipe: %m");
		return false;
	}
	fflush(NULL);
	pid = fork();
	if (pid < 0)
	{
		close(pipefd[0]);
		close(pipefd[1]);
		snprintf(why, whylen, "could not fork %s: %m", name);
		return false;
	}
	if (pid == 0)
	{
		sigset_t	none;

		/*
		 * Child: own process group so we can kill it, default signal
		 * handling, stdout to the pipe, none of the postmaster's other files.
		 */
		setpgid(0, 0);
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		for (int sig = 1; sig < NSIG; sig++)
			if (sig != SIGKILL && sig != SIGSTOP)
				signal(sig, SIG_DFL);
		if (dup2(pipefd[1], STDOUT_FILENO) < 0)
			_exit(126);
		for (int fd = 3; fd < 1024; fd++)
			close(fd);
		execl("/bin/sh", "sh", "-c", command, (char *) NULL);
		_exit(127);
	}
	close(pipefd[1]);
	deadline = GetCurrentTimestamp() + (TimestampTz) fc_key_command_timeout * USECS_PER_SEC;
	for (;;)
	{
		struct pollfd pfd = {.fd = pipefd[0],.events = POLLIN};
		long		left = (deadline - GetCurrentTimestamp()) / 1000;
		int			rc;
		ssize_t		n;

		if (left <= 0)
		{
			timed_out = true;
			break;
		}
		rc = poll(&pfd, 1, (int) Min(left, 1000));
		if (rc < 0 && errno == EINTR)
			continue;
		if (rc <= 0)
			continue;
		n = read(pipefd[0], out + got, outsize - 1 - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += n;
		if (got >= outsize - 1)
			break;
	}
	close(pipefd[0]);

	/* the command may close its output and go on running: the deadline holds */
	for (;;)
	{
		pid_t		r = timed_out ? 0 : waitpid(pid, &status, WNOHANG);

		if (r == pid || (r < 0 && errno != EINTR))
			break;
		if (timed_out || GetCurrentTimestamp() >= deadline)
		{
			timed_out = true;
			kill(-pid, SIGKILL);
			kill(pid, SIGKILL);
			while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
				;
			break;
		}
		pg_usleep(10000L);
	}
	out[got] = '\0';
	*outlen = got;

	if (timed_out)
		snprintf(why, whylen, "%s did not finish within %d s", name,
				 fc_key_command_timeout);
	else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		snprintf(why, whylen, "%s failed (%s %d)", name,
				 WIFEXITED(status) ? "exit code" : "signal",
				 WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
	return !timed_out && WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

/* Provider "command": the hex output of fieldcrypt.key_command. */
static bool
run_key_command(uint8 *kek, char *why, size_t whylen)
{
	char		buf[512];
	size_t		got;
	bool		ok;

	ok = fc_run_command(fc_key_command, "fieldcrypt.key_command", buf, sizeof(buf),
						&got, why, whylen);
	if (ok && !parse_hex_key(buf, got, kek))
	{
		snprintf(why, whylen,
				 "fieldcrypt.key_command did not print a 256-bit key as 64 hexadecimal digits");
		ok = false;
	}
	explicit_bzero(buf, sizeof(buf));
	return ok;
}

/*
 * Get the cluster KEK from the configured provider, remember where it came
 * from and warn about key files that travel with backups of the data
 * directory.
 */
bool
fc_kek_load(uint8 *kek, char *why, size_t whylen)
{
	char		path[MAXPGPATH];
	bool		ok;

	kek_place_known = false;
	kek_place_inside = -1;
	if (fc_key_provider == FC_PROVIDER_COMMAND)
	{
		strlcpy(kek_place, "fieldcrypt.key_command", sizeof(kek_place));
		kek_place_known = true;
		ok = run_key_command(kek, why, whylen);
		warn_key_placement(NULL);
		return ok;
	}
	if (!resolve_key_file(path, sizeof(path), why, whylen))
		return false;
	strlcpy(kek_place, path, sizeof(kek_place));
	kek_place_known = true;
	kek_place_inside = in_data_directory(path) ? 1 : 0;
	ok = file_provider(path, kek, why, whylen);
	warn_key_placement(path);
	return ok;
}

/*
 * Unseal a plain keyring image ("FCKR", no tenant header) into dbs[].
 * Returns FC_RING_OK or FC_RING_UNREADABLE with the reason in why.
 */
FcRingState
fc_keyring_unseal(const uint8 *kek, const uint8 *p, size_t len,
				  FcDbKeys *dbs, int max_dbs, int *ndbs, const char *what,
				  char *why, size_t whylen)
{
	uint32		format,
				plen,
				entsize,
				count;
	uint8	   *plain;
	FcCipher   *ctx;
	bool		ok;

	*ndbs = 0;
	if (len < KEYRING_HDR_LEN || memcmp(p, KEYRING_MAGIC, 4) != 0)
	{
		snprintf(why, whylen, "%s is not a fieldcrypt keyring or is truncated", what);
		return FC_RING_UNREADABLE;
	}
	memcpy(&format, p + 4, 4);
	memcpy(&plen, p + 8, 4);
	if (format != KEYRING_FORMAT || plen != len - KEYRING_HDR_LEN || plen < 8)
	{
		snprintf(why, whylen, "%s has an unknown format or is truncated", what);
		return FC_RING_UNREADABLE;
	}
	plain = palloc(plen);
	ctx = fc_cipher_new(kek, false);
	ok = ctx && fc_gcm_open(ctx, p + KEYRING_HDR_AAD, p, KEYRING_HDR_AAD,
							p + KEYRING_HDR_LEN, plen, plain,
							p + KEYRING_HDR_AAD + FC_NONCE_LEN);
	fc_cipher_free(ctx);
	if (!ok)
	{
		explicit_bzero(plain, plen);
		pfree(plain);
		snprintf(why, whylen,
				 "%s could not be authenticated: it is corrupted or sealed "
				 "with another cluster key", what);
		return FC_RING_UNREADABLE;
	}
	memcpy(&entsize, plain, 4);
	memcpy(&count, plain + 4, 4);
	if (entsize != sizeof(FcDbKeys) || (size_t) count * entsize != plen - 8)
	{
		explicit_bzero(plain, plen);
		pfree(plain);
		snprintf(why, whylen, "%s was written by an incompatible build", what);
		return FC_RING_UNREADABLE;
	}
	if ((int) count > max_dbs)
	{
		explicit_bzero(plain, plen);
		pfree(plain);
		snprintf(why, whylen, "%s holds %u databases, more than fieldcrypt.max_databases = %d",
				 what, count, max_dbs);
		return FC_RING_UNREADABLE;
	}
	memcpy(dbs, plain + 8, (size_t) count * entsize);
	*ndbs = count;
	explicit_bzero(plain, plen);
	pfree(plain);
	return FC_RING_OK;
}

/*
 * Seal dbs[0..n) into a keyring image (palloc'd, *len bytes).  ERRORs on
 * failure.
 */
uint8 *
fc_keyring_seal(const uint8 *kek, const FcDbKeys *dbs, int n, size_t *len)
{
	uint32		plen = 8 + (uint32) n * sizeof(FcDbKeys);
	uint32		format = KEYRING_FORMAT;
	uint32		entsize = sizeof(FcDbKeys);
	uint32		count = n;
	size_t		total = KEYRING_HDR_LEN + plen;
	uint8	   *plain = palloc(plen);
	uint8	   *out = palloc(total);
	FcCipher   *ctx;
	bool		ok;

	memcpy(plain, &entsize, 4);
	memcpy(plain + 4, &count, 4);
	if (n > 0)
		memcpy(plain + 8, dbs, (size_t) n * sizeof(FcDbKeys));

	memcpy(out, KEYRING_MAGIC, 4);
	memcpy(out + 4, &format, 4);
	memcpy(out + 8, &plen, 4);
	ctx = fc_cipher_new(kek, true);
	ok = ctx && fc_random_bytes(out + KEYRING_HDR_AAD, FC_NONCE_LEN) &&
		fc_gcm_seal(ctx, out + KEYRING_HDR_AAD, out, KEYRING_HDR_AAD,
					plain, plen, out + KEYRING_HDR_LEN,
					out + KEYRING_HDR_AAD + FC_NONCE_LEN);
	fc_cipher_free(ctx);
	explicit_bzero(plain, plen);
	pfree(plain);
	if (!ok)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not seal the fieldcrypt keyring: %s", fc_crypto_last_error())));
	*len = total;
	return out;
}

/*
 * Replace the keyring file with a sealed image, atomically and durably.
 * ERRORs (leaving the old keyring) on any failure.
 */
void
fc_keyring_write_image(const char *path, const uint8 *image, size_t len)
{
	char		tmp[MAXPGPATH];
	int			fd;

	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	fd = OpenTransientFilePerm(tmp, O_WRONLY | O_CREAT | O_TRUNC | PG_BINARY,
							   S_IRUSR | S_IWUSR);
	if (fd < 0)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not create file \"%s\": %m", tmp)));
	errno = 0;
	if (write(fd, image, len) != (ssize_t) len)
	{
		if (errno == 0)
			errno = ENOSPC;
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not write file \"%s\": %m", tmp)));
	}
	if (pg_fsync(fd) != 0)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not fsync file \"%s\": %m", tmp)));
	if (CloseTransientFile(fd) != 0)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not close file \"%s\": %m", tmp)));
	durable_rename(tmp, path, ERROR);
}

/*
 * ERROR unless this server can write a new keyring file (the directory of
 * FC_KEYRING_FILE): a key change checks it before it changes anything, so
 * that a Citus coordinator learns it from every node before any applies.
 */
void
fc_keyring_check_writable(void)
{
	if (access(FC_KEYRING_DIR, W_OK | X_OK) != 0)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("cannot write the keyring directory \"%s\": %m", FC_KEYRING_DIR),
				 errhint("The data directory's \"%s\" must be writable by the server.", FC_KEYRING_DIR)));
}
