package cluster

import "golang.org/x/sys/unix"

// freeSpace reports the bytes of dir's file system available to an
// unprivileged user (statfs f_bavail: root's reserved blocks excluded).
func freeSpace(dir string) (uint64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return st.Bavail * uint64(st.Bsize), nil
}
