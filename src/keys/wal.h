/*-------------------------------------------------------------------------
 *
 * wal.h
 *	  fieldcrypt's custom WAL resource manager: key state reaches standbys.
 *
 * src/keys/wal.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef FIELDCRYPT_WAL_H
#define FIELDCRYPT_WAL_H

#include "access/xlogdefs.h"
#include "storage/buf.h"

#define FC_RMGR_ID			205
#define FC_RMGR_NAME		"fieldcrypt"
#define XLOG_FC_KEYRING		0x10	/* a whole sealed keyring image */
#define XLOG_FC_PAGE		0x20	/* a page re-encrypted in place (full image) */
#define XLOG_FC_PREPARED	0x30	/* u32 xid + a prepared key change file (prepared.c) */
#define XLOG_FC_PREPARED_DONE 0x40	/* u32 xid: that file was removed */

/* Applies a keyring image replayed from WAL (fc_keystore_redo_image). */
typedef void (*FcWalRedoImage) (const uint8 *image, size_t len);

/* Writes (file != NULL) or removes the prepared key change file of xid (prepared.c). */
typedef void (*FcWalRedoPrepared) (TransactionId xid, const uint8 *file, size_t len);

extern void fc_wal_init(FcWalRedoImage redo);
extern void fc_wal_set_prepared_redo(FcWalRedoPrepared redo);
extern void fc_wal_log_prepared(TransactionId xid, const uint8 *file, size_t len);
extern void fc_wal_log_keyring(const uint8 *image, size_t len);
extern XLogRecPtr fc_wal_log_page(Buffer buf);

#endif
