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
static bool file_provider(uint8 *kek, char *why, size_t whylen);

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

/* Provider "file": read the key file, or create it on a cluster with no keyring. */
static bool
file_provider(uint8 *kek, char *why, size_t whylen)
{
	const char *path = (fc_key_file && fc_key_file[0]) ? fc_key_file : FC_DEFAULT_KEY_FILE;
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

/* Get the cluster KEK from the configured provider. */
bool
fc_kek_load(uint8 *kek, char *why, size_t whylen)
{
	if (fc_key_provider == FC_PROVIDER_COMMAND)
		return run_key_command(kek, why, whylen);
	return file_provider(kek, why, whylen);
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
