/*-------------------------------------------------------------------------
 *
 * wal.c
 *	  Custom WAL resource manager (ID 205, "fieldcrypt") that carries every
 *	  change of key state to standbys and through crash recovery and PITR.
 *
 *	  A record holds the whole keyring image exactly as written to
 *	  $PGDATA/pg_fieldcrypt/keyring: sealed under the cluster key, which is
 *	  never in WAL.  Replaying it unseals the image with this server's own
 *	  cluster key (from its own key provider), replaces the keyring file and
 *	  the keys in shared memory.  In a tenant key mode (tenant.c) the image
 *	  starts with the tenant key header, so a change of tenant key travels
 *	  the same way; a server that cannot use the new tenant key keeps the
 *	  record in keyring.pending.  Records are whole images, so replay is
 *	  idempotent and the last record replayed wins.  A server whose cluster
 *	  key differs keeps its previous keys and says so in the log.
 *
 *	  A second record type carries a full image of a heap page whose
 *	  encrypted values the re-encryption worker rewrote in place (same
 *	  length, same logical value: see src/rotation/).  Replay restores the
 *	  image under a cleanup lock.
 *
 *	  Two more record types carry the files of key changes sealed by
 *	  PREPARE TRANSACTION (prepared.c): XLOG_FC_PREPARED holds the
 *	  transaction id and the file's bytes (the change sealed under the
 *	  cluster key, never a key in clear), written before the PREPARE
 *	  record; XLOG_FC_PREPARED_DONE the transaction id once the file was
 *	  applied, removed or set aside.  Replay writes or removes
 *	  pg_fieldcrypt/prepared/<xid>, so a standby promoted while a key
 *	  change is prepared, crash recovery and PITR hold the same files as
 *	  the primary: COMMIT PREPARED on the promoted node applies the change.
 *	  Records of 1.0 (KEYRING, PAGE) are unchanged.
 *
 *	  The library must be loaded (shared_preload_libraries) wherever this
 *	  WAL is replayed: standbys, crash recovery, PITR.
 *
 * src/keys/wal.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xlog.h"
#include "access/xlog_internal.h"
#include "access/xloginsert.h"
#include "access/xlogreader.h"
#include "access/xlogutils.h"
#include "lib/stringinfo.h"
#include "storage/bufmgr.h"

#include "keys/wal.h"

static void fc_rm_redo(XLogReaderState *record);

/* What replaying a keyring image does (keystore.c), set by fc_wal_init. */
static FcWalRedoImage redo_image = NULL;
/* What replaying a prepared key change file does (prepared.c). */
static FcWalRedoPrepared redo_prepared = NULL;
static void fc_rm_desc(StringInfo buf, XLogReaderState *record);
static const char *fc_rm_identify(uint8 info);

static RmgrData fc_rmgr = {
	.rm_name = FC_RMGR_NAME,
	.rm_redo = fc_rm_redo,
	.rm_desc = fc_rm_desc,
	.rm_identify = fc_rm_identify,
};

/* Register the resource manager; called from _PG_init. */
void
fc_wal_init(FcWalRedoImage redo)
{
	redo_image = redo;
	RegisterCustomRmgr(FC_RMGR_ID, &fc_rmgr);
}

/* Set what replaying a prepared key change record does; from _PG_init. */
void
fc_wal_set_prepared_redo(FcWalRedoPrepared redo)
{
	redo_prepared = redo;
}

/*
 * WAL-log the prepared key change file of xid (file, len) or, with file
 * NULL, its removal, and flush.
 */
void
fc_wal_log_prepared(TransactionId xid, const uint8 *file, size_t len)
{
	XLogRecPtr	lsn;

	if (RecoveryInProgress())
		return;
	XLogBeginInsert();
	XLogRegisterData((char *) &xid, sizeof(xid));
	if (file != NULL)
		XLogRegisterData((char *) file, (int) len);
	lsn = XLogInsert(FC_RMGR_ID, file != NULL ? XLOG_FC_PREPARED : XLOG_FC_PREPARED_DONE);
	XLogFlush(lsn);
}

/* WAL-log a keyring image and flush it. */
void
fc_wal_log_keyring(const uint8 *image, size_t len)
{
	XLogRecPtr	lsn;

	if (RecoveryInProgress())
		return;
	XLogBeginInsert();
	XLogRegisterData((char *) image, (int) len);
	lsn = XLogInsert(FC_RMGR_ID, XLOG_FC_KEYRING);
	XLogFlush(lsn);
}

/*
 * WAL-log the page of buf as a whole after an in-place rewrite (values
 * re-encrypted where they are, same length).  The caller holds a cleanup
 * lock on buf, is in a critical section and has marked the buffer dirty;
 * it sets the page LSN to the result.  Replay restores the image under a
 * cleanup lock too, so a hot standby reader never sees half of a value.
 */
XLogRecPtr
fc_wal_log_page(Buffer buf)
{
	XLogBeginInsert();
	XLogRegisterBuffer(0, buf, REGBUF_FORCE_IMAGE | REGBUF_STANDARD);
	return XLogInsert(FC_RMGR_ID, XLOG_FC_PAGE);
}

/* Replay: install the keyring image, or restore a rewritten page. */
static void
fc_rm_redo(XLogReaderState *record)
{
	uint8		info = XLogRecGetInfo(record) & ~XLR_INFO_MASK;

	if (info == XLOG_FC_KEYRING)
		redo_image((const uint8 *) XLogRecGetData(record),
				   XLogRecGetDataLen(record));
	else if (info == XLOG_FC_PAGE)
	{
		Buffer		buf;

		if (XLogReadBufferForRedoExtended(record, 0, RBM_NORMAL, true, &buf) != BLK_RESTORED)
			elog(PANIC, "fieldcrypt redo: page image missing from a page rewrite record");
		UnlockReleaseBuffer(buf);
	}
	else if (info == XLOG_FC_PREPARED || info == XLOG_FC_PREPARED_DONE)
	{
		const char *data = XLogRecGetData(record);
		size_t		len = XLogRecGetDataLen(record);
		TransactionId xid;

		if (len < sizeof(TransactionId) || redo_prepared == NULL)
			elog(PANIC, "fieldcrypt redo: malformed prepared key change record");
		memcpy(&xid, data, sizeof(xid));
		if (info == XLOG_FC_PREPARED)
			redo_prepared(xid, (const uint8 *) data + sizeof(xid), len - sizeof(xid));
		else
			redo_prepared(xid, NULL, 0);
	}
	else
		elog(PANIC, "fieldcrypt redo: unknown record type %u", info);
}

/* Describe a record for pg_waldump; never anything about keys. */
static void
fc_rm_desc(StringInfo buf, XLogReaderState *record)
{
	uint8		info = XLogRecGetInfo(record) & ~XLR_INFO_MASK;

	if (info == XLOG_FC_KEYRING)
		appendStringInfo(buf, "sealed keyring image of %u bytes",
						 (unsigned) XLogRecGetDataLen(record));
	else if (info == XLOG_FC_PAGE)
		appendStringInfoString(buf, "page re-encrypted in place");
	else if ((info == XLOG_FC_PREPARED || info == XLOG_FC_PREPARED_DONE) &&
			 XLogRecGetDataLen(record) >= sizeof(TransactionId))
	{
		TransactionId xid;

		memcpy(&xid, XLogRecGetData(record), sizeof(xid));
		if (info == XLOG_FC_PREPARED)
			appendStringInfo(buf, "sealed key change of prepared transaction %u, %u bytes", xid,
							 (unsigned) (XLogRecGetDataLen(record) - sizeof(xid)));
		else
			appendStringInfo(buf, "key change file of transaction %u removed", xid);
	}
}

static const char *
fc_rm_identify(uint8 info)
{
	if ((info & ~XLR_INFO_MASK) == XLOG_FC_KEYRING)
		return "KEYRING";
	if ((info & ~XLR_INFO_MASK) == XLOG_FC_PAGE)
		return "PAGE";
	if ((info & ~XLR_INFO_MASK) == XLOG_FC_PREPARED)
		return "PREPARED";
	if ((info & ~XLR_INFO_MASK) == XLOG_FC_PREPARED_DONE)
		return "PREPARED_DONE";
	return NULL;
}
