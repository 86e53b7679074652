# prebake-create.sh: sourced by bin/prebake for a create whose config.json names a checkpoint
# (or a spec capture). The Node program decides; this shell executes: it runs `runc restore`,
# finishes what was restored, clears away a restore not taken, and has bin/prebake exec `runc
# create` for a cold start. The names and the verdict are src/contract.ts's.
#
# create_prebaked runs in a subshell of bin/prebake (the process the engine started and waits
# for): if the engine kills that one, this one is still there to clear away what it started.
# Its status: 0 restored, 75 cold (bin/prebake then execs runc create with the caller's argv
# and descriptors), anything else the create's failure.

# The facts bin/prebake's scan of config.json gave ($facts): a=<io.prebake.checkpoint annotation>,
# e=<PREBAKE_CHECKPOINT value>, c (a spec capture is asked for), r=<root.path>, and m when no
# restore may start before the Node program has read the file: the checkpoint's name or value
# appears more than once (this is no JSON parser: which one is process.env's is for the Node
# program to tell), or an org.criu.* annotation is there.

# CLOCK_MONOTONIC in ns, from the header of /proc/timer_list (root only): now=, empty if it
# cannot be read there. (No fork: the shell has no clock of its own.)
clock() {
  now=
  { read -r _; read -r _; read -r _ _ now _; } < /proc/timer_list
  case $now in *[!0-9]*) now= ;; esac
} 2>/dev/null

# A line in runc's log format, to --log (or stderr, as text): $1 level, $2 message. For what the
# shell alone knows; the Node program writes its own lines.
log_line() {
  json_escape "$id"; i=$m
  json_escape "$2"
  t=$(date -u +%Y-%m-%dT%H:%M:%S.000Z)
  if [ -n "${log:-}" ] && [ "${logfmt:-text}" = json ]; then
    line=$(printf '{"level":"%s","time":"%s","id":"%s","msg":"%s"}' "$1" "$t" "$i" "$m")
  else
    line=$(printf 'time="%s" level=%s msg="%s"' "$t" "$1" "$m")
  fi
  log_file=${log:-}
  say "$line"
}

# $1 with `"` and `\` escaped, in $m (for a JSON string or a logrus quoted value).
json_escape() {
  s=$1 m=
  while :; do
    case $s in
      *[\"\\]*) pre=${s%%[\"\\]*}; c=${s#"$pre"}; c=${c%"${c#?}"}; m=$m$pre\\$c; s=${s#"$pre"?} ;;
      *) m=$m$s; break ;;
    esac
  done
}

# The verified store's checkpoint for this create, in $img, found without the Node program: the
# hint prebake-build leaves beside the manifest (an empty file named for the manifest's sha256, a
# glob) names a store entry, taken if the host imported it under a key it still trusts (the
# entry's `ok` names the key; the trust store holds <key id>.pub) and if it holds the same
# manifest.json, byte for byte (one `cmp`). The Node program then checks the signature and the
# spec before anything restored runs. The path inside the rootfs is walked without "..", and no
# symlink on the way is followed.
store_checkpoint() {
  img=
  [ -n "$ckpt" ] && [ -n "$rootfs" ] || return 0
  case $bundle in /*) bdir=$bundle ;; *) bdir=$PWD/$bundle ;; esac
  case $rootfs in /*) ;; *) rootfs=$bdir/$rootfs ;; esac
  dir=$rootfs
  set -f; oldifs=$IFS; IFS=/
  for c in $ckpt; do
    case $c in ''|.) continue ;; ..) dir=$rootfs; break ;; esac
    dir=$dir/$c
    [ -L "$dir" ] && { dir=$rootfs; break; }
  done
  IFS=$oldifs; set +f
  [ "$dir" != "$rootfs" ] && [ -f "$dir/manifest.json" ] && [ ! -L "$dir/manifest.json" ] || return 0
  store=${PREBAKE_STORE_DIR:-} trust=
  if [ -r "$conf" ]; then
    while IFS= read -r line || [ -n "$line" ]; do
      case $line in
        *'"store"'*) v=${line#*'"store"'}; v=${v#*:}; v=${v#*\"}; [ -n "$store" ] || store=${v%%\"*} ;;
        *'"trust"'*) v=${line#*'"trust"'}; v=${v#*:}; v=${v#*\"}; trust=${v%%\"*} ;;
      esac
    done < "$conf"
  fi
  store=${store:-/var/lib/prebake/store} trust=${trust:-/etc/prebake/trust}
  digest= kid=
  for h in "$dir"/manifest.json.sha256-*; do digest=${h##*/manifest.json.sha256-}; break; done
  case $digest in *[!0-9a-f]*) return 0 ;; esac
  [ ${#digest} = 64 ] || return 0
  { read -r kid < "$store/$digest/ok"; } 2>/dev/null
  case $kid in ''|*[!0-9a-f]*) return 0 ;; esac
  [ -f "$trust/$kid.pub" ] || return 0
  # The hint is the image's word: the entry must hold this very manifest, or an image could have
  # another image's checkpoint restored against its own rootfs and spec.
  cmp -s -- "$dir/manifest.json" "$store/$digest/manifest.json" || return 0
  img=$store/$digest/checkpoint
}

# runc with the create's global flags without the log's (a restore gets a log of its own in the
# state). $1: restore (in the background, runc's pid in $runc_pid) or delete (`runc delete
# --force` of the container, in the foreground).
runc_for() {
  how=$1; shift
  k=0 skip=
  for a do
    shift
    k=$((k + 1))
    [ "$k" -ge "$n" ] && continue
    if [ -n "$skip" ]; then skip=; continue; fi
    case $a in
      --log|-log|--log-format|-log-format) skip=1; continue ;;
      --log=*|-log=*|--log-format=*|-log-format=*) continue ;;
    esac
    set -- "$@" "$a"
  done
  if [ "$how" = delete ]; then "$runc" "$@" delete --force "$id"; return; fi
  set -- "$runc" "$@" --log "$st/runc-restore.log" --log-format json restore --detach \
    --image-path "$img" --work-path "$st/criu" --bundle "$bdir" --pid-file "$pid_file"
  [ -n "$console" ] && set -- "$@" --console-socket "$console"
  [ -n "$nopivot" ] && set -- "$@" --no-pivot
  # runc takes the caller's stdin (fd 5: a background job's is /dev/null); the restored process
  # takes runc's stdio.
  CRIU_CONFIG_FILE=$criu_conf "$@" "$id" <&5 5<&- 6<&- &
  runc_pid=$!
}

# Makes the container's state with every file a restore writes there (CRIU's work dir and log,
# runc's log, the `restored` marker, CRIU's config ($conf_text) if dist/criu.conf is not as it
# must be or names a host mount that is not there), so that a state dir with no room left is a
# cold start, not a half-made container.
make_state() {
  mkdir -p -m 700 "$base" "$st/criu" && true > "$st/criu/restore.log" && true > "$st/runc-restore.log" &&
    true > "$st/restored" && { [ "$criu_conf" = "$dist/criu.conf" ] || printf '%s' "$conf_text" > "$criu_conf"; }
  # (Regular builtins only: a failed redirection of a special one, such as ":", would end this shell.)
}

# CRIU's config for this restore: dist/criu.conf when it is as it must be (its first line
# `leave-stopped`, then the host paths the bake's external mounts are bound from: the keys and
# default paths of HOST_MOUNTS in src/contract.ts) and those host mounts are there; else
# $conf_text, written into the state by make_state: `leave-stopped` and the lines of the host
# mounts that are there (a checkpoint that needs a missing one fails to restore: a cold start).
# The host mounts are made when missing (/run is emptied at boot), at the paths dist/criu.conf
# names whatever PREBAKE_STATE_DIR says; checked without a fork (a read-only mount fails `-w`,
# with EROFS; a missing path or a plain directory does not), made by a fork only when one is
# missing (mount_host). Why one could not be made, in $mount_why.
criu_config() {
  criu_conf=$dist/criu.conf conf_line= mask_dir= cg_dir= mount_why=
  {
    {
      read -r conf_line
      while read -r l; do
        case $l in
          'external mnt[prebake-mask]:/'*) mask_dir=${l#*]:} ;;
          'external mnt[prebake-cgroup-v1]:/'*) cg_dir=${l#*]:} ;;
        esac
      done
    } < "$criu_conf"
  } 2>/dev/null
  if [ "$conf_line" != leave-stopped ] || [ -z "$mask_dir" ] || [ -z "$cg_dir" ]; then
    conf_line= mask_dir=/run/prebake/mask cg_dir=/run/prebake/cgroup-v1
  fi
  # /sys/fs/cgroup is runc's tmpfs only under cgroup v1 (cgroup v2's root holds cgroup.controllers).
  cg=
  [ -d /sys/fs/cgroup ] && [ ! -e /sys/fs/cgroup/cgroup.controllers ] && cg=$cg_dir
  if ! { [ -d "$mask_dir" ] && [ ! -w "$mask_dir" ]; } || { [ -n "$cg" ] && ! { [ -d "$cg" ] && [ ! -w "$cg" ]; }; }; then
    if ! mount_out=$({ mkdir -p -m 700 "${mask_dir%/*}" && flock "${mask_dir%/*}" sh -c "$mount_host" sh "$mask_dir" "$cg"; } 2>&1 >/dev/null); then
      mount_out=${mount_out%"$nl"}
      mount_why=${mount_out##*"$nl"}
      mount_why=${mount_why:-failed}
    fi
  fi
  conf_text="leave-stopped$nl" ok=1
  if [ -d "$mask_dir" ] && [ ! -w "$mask_dir" ]; then conf_text="${conf_text}external mnt[prebake-mask]:$mask_dir$nl"; else ok=; fi
  if [ -d "$cg_dir" ] && [ ! -w "$cg_dir" ]; then conf_text="${conf_text}external mnt[prebake-cgroup-v1]:$cg_dir$nl"; elif [ -n "$cg" ]; then ok=; fi
  [ -n "$conf_line" ] && [ -n "$ok" ] || criu_conf=$st/criu.conf
}

# Makes the host mounts, under a lock on their directory (creates at once): $1, the masks' (an
# empty, read-only tmpfs), and $2 if not empty, cgroup v1's (a read-only tmpfs holding what the
# host's /sys/fs/cgroup holds: a directory per controller hierarchy, the symlinks of comounted
# ones; runc's tmpfs in a container holds the same names, and CRIU mounts the container's
# controllers on them). Each private (nothing mounted in it propagates) and never writable.
mount_host='
  ro() { [ -d "$1" ] && [ ! -w "$1" ]; }
  if ! ro "$1"; then
    mkdir -p "$1" && mount -t tmpfs -o ro,nosuid,nodev,noexec,size=4k,mode=0555 prebake-mask "$1" && mount --make-private "$1" || exit 1
  fi
  if [ -n "$2" ] && ! ro "$2"; then
    mkdir -p "$2" && mount -t tmpfs -o nosuid,nodev,noexec,size=4k,mode=0755 prebake-cgroup-v1 "$2" || exit 1
    for e in /sys/fs/cgroup/*; do
      n=${e##*/}
      if [ -L "$e" ]; then ln -s "$(readlink "$e")" "$2/$n"; elif [ -d "$e" ]; then mkdir "$2/$n"; fi || { umount "$2"; exit 1; }
    done
    mount -o remount,ro,nosuid,nodev,noexec "$2" && mount --make-private "$2" || { umount "$2"; exit 1; }
  fi'

# Starts `runc restore` from $img into the container's state. Fails with the reason in $why if
# the state cannot be written (nothing started, nothing left).
start_restore() {
  st=$state/$id
  [ -e "$st" ] && rm -rf "$st"
  pid_file=${pidfile:-$st/pid}
  criu_config
  [ -n "$mount_why" ] && log_line warning "the host mounts $mask_dir${cg:+ and $cg} (read-only tmpfs a checkpoint's masked directories${cg:+ and /sys/fs/cgroup} are bound from) could not be made: $mount_why; a checkpoint baked with them starts cold"
  if ! make_state 2>/dev/null; then
    rm -rf "$st"
    # Again, for the message (only now: a command substitution is a fork).
    why=$(make_state 2>&1 >/dev/null); why=${why##*: }
    rm -rf "$st"
    why="cannot write prebake's state in $st: ${why:-failed}"
    return 1
  fi
  # Held open: clear_away touches the state, runc's dir and the container only while the state
  # is still this one (an engine that gave up may have deleted it and created the id anew).
  exec 6<"$st"
  clock; t0=$now
  runc_for restore "$@"
  tried=$img
}

# Stops $1 and every process under it, each as soon as it is found (a stopped process forks no
# more; a fork under way when the stop came shows up in the next round), then kills them all and
# waits (up to 5 s) until they are gone or zombies.
kill_tree() {
  found=' ' todo=$1 r=0
  while [ -n "$todo" ] && [ $r -lt 100 ]; do
    for p in $todo; do kill -STOP "$p" 2>/dev/null; found="$found$p "; done
    # (Stopped once its state says so: a signal is delivered, not done, when kill returns.)
    for p in $todo; do i=0; while [ $i -lt 2000 ] && ! state_in "$p" T t Z X; do i=$((i + 1)); done; done
    todo=
    for p in $found; do
      for c in /proc/$p/task/*/children; do
        kids=
        { read -r kids < "$c"; } 2>/dev/null
        for k in $kids; do case $found$todo in *" $k "*) ;; *) todo="$todo $k " ;; esac; done
      done
    done
    r=$((r + 1))
  done
  for p in $found; do kill -KILL "$p" 2>/dev/null; done
  r=0
  for p in $found; do
    while [ $r -lt 500 ] && ! state_in "$p" Z X; do sleep 0.01; r=$((r + 1)); done
  done
}

# Whether process $1 is gone or its state (from /proc/<pid>/stat, after the command name, which
# may hold spaces and parentheses) is one of $2...
state_in() {
  s=
  { read -r s < "/proc/$1/stat"; } 2>/dev/null || return 0
  s=${s##*) }; s=${s%% *}
  shift
  for w do [ "$s" = "$w" ] && return 0; done
  return 1
}

# Unmounts (lazily) every mount at or below the given directories, the last mounted first.
# mountinfo names mount points by their real path (docker's --root /var/run/docker/… is
# /run/docker/… where /var/run is a symlink to /run).
unmount_under() {
  for d do r=$(readlink -f -- "$d" 2>/dev/null) && [ "$r" != "$d" ] && set -- "$@" "$r"; done
  pts=
  while read -r _ _ _ _ mp _; do
    for d do case $mp in "$d"|"$d"/*) pts="$mp$nl$pts"; break ;; esac; done
  done < /proc/self/mountinfo
  set -f; oldifs=$IFS; IFS=$nl
  for m in $pts; do umount -l "$m" 2>/dev/null; done
  IFS=$oldifs; set +f
}

# Removes CRIU's network lock (its iptables chains, its nftables tables) from the namespace at $1:
# a restore that failed after CRIU locked the network leaves it, and the cold container would
# never receive a packet.
unlock_network() {
  nsenter --net="$1" sh -c 'for t in iptables ip6tables; do command -v $t >/dev/null || continue;
    $t -w -D INPUT -j CRIU; $t -w -D OUTPUT -j CRIU; $t -w -F CRIU; $t -w -X CRIU; done
    command -v nft >/dev/null && nft list tables | while read -r _ fam name; do case $name in CRIU*) nft delete table $fam $name;; esac; done' >/dev/null 2>&1
}

# Clears away the restore under way or done and not taken: runc and everything under it killed
# (CRIU, the tasks it made, still stopped), runc's temporary .<pid file> (runc creates it
# exclusively: the cold create's runc would fail on it), what is mounted under runc's dir and
# the state (unmounted before runc's delete: on the state of a restore killed midway, the delete
# took the container's rootfs mount with it), runc's delete (which kills the tasks a finished
# restore left stopped), CRIU's network lock in the netns joined ($netns), prebake's state (the
# marker first: a cold container must not find it), and runc's dir, which a runc killed before it
# wrote its state leaves and its delete does not know. All of it by name only while the state dir
# is still the one this create made (fd 6), or gone (the engine's delete took it): a state dir
# made anew means another create of the id, whose container is not this one's to touch; then
# only this create's runc and what is under it go.
clear_away() {
  [ -n "$st" ] || return 0
  [ -n "$runc_pid" ] && { kill_tree "$runc_pid"; wait "$runc_pid" 2>/dev/null; }
  runc_pid=
  if [ "$st" -ef /proc/self/fd/6 ] || [ ! -e "$st" ]; then
    case $pid_file in */*) rm -f -- "${pid_file%/*}/.${pid_file##*/}" ;; *) rm -f -- ".$pid_file" ;; esac
    unmount_under "$root/$id" "$st"
    runc_for delete "$@" >/dev/null 2>&1
    [ -n "$netns" ] && unlock_network "$netns"
    rm -f "$st/restored"
    rm -rf --one-file-system "$st" "$root/$id"
  fi
  exec 6<&-
  st=
}

# Resumes a restored process CRIU left stopped, and everything under it (stopped, none forks).
resume() {
  local c k kids
  for c in /proc/$1/task/*/children; do
    kids=
    read -r kids < "$c" 2>/dev/null
    for k in $kids; do resume "$k"; done
  done
  kill -CONT "$1" 2>/dev/null
}

# Finishes an accepted restore once runc has exited 0: the loopback, the hostname, the restore
# signal, the tasks resumed (the fields of the accept verdict: $sig, a signal number or empty;
# $lo; $host; $start, the restored init's start time, which the pid must still have). Fails if
# the restored process is gone.
finish() {
  case $sig in *[!0-9]*) return 1 ;; esac
  pid=
  read -r pid < "$pid_file" 2>/dev/null
  case $pid in ''|*[!0-9]*) return 1 ;; esac
  s=
  { read -r s < "/proc/$pid/stat"; } 2>/dev/null
  set -- ${s##*) }
  [ $# -ge 20 ] && shift 19 && [ "$1" = "$start" ] || return 1
  [ "$lo" = 1 ] && nsenter --net="/proc/$pid/ns/net" ip link set lo up >/dev/null 2>&1
  case $host in ''|-*) ;; *) nsenter --uts="/proc/$pid/ns/uts" hostname "$host" >/dev/null 2>&1 ;; esac
  if [ -n "$sig" ]; then kill -"$sig" "$pid" 2>/dev/null || return 1; fi
  resume "$pid"
}

# Whether the engine still waits for this create: this subshell's parent is still bin/prebake
# ($$). (From /proc/self/stat without a fork; the command name may hold spaces.)
caller_waits() {
  s=
  { read -r s < /proc/self/stat; } 2>/dev/null
  set -- ${s##*) }
  [ "$2" = "$$" ]
}

# A line the Node program wrote for the log (the verdict's), to its file or stderr.
say() {
  [ -n "$1" ] || return 0
  if [ -z "$log_file" ]; then
    printf '%s\n' "$1" >&2
  else
    { printf '%s\n' "$1" >> "$log_file"; } 2>/dev/null || printf '%s\n' "$1" >&2
  fi
}

# Asks the Node program for its verdict on this create: $word and its lines in $f1..$f7, and the
# Node program's status in $rc. With a restore under way, the Node program starts beside runc
# and checks it; the verdict comes on a FIFO, so that an accepted restore is finished while the
# Node program exits (~3 ms of the kernel tearing it down), not after. Otherwise on a pipe.
ask_node() {
  word= verdict= rc=0
  if [ -n "$runc_pid" ]; then
    export PREBAKE_EARLY="$st" PREBAKE_EARLY_IMAGE="$img" PREBAKE_EARLY_RUNC="$runc_pid" PREBAKE_EARLY_T0="$t0"
  else
    unset PREBAKE_EARLY PREBAKE_EARLY_IMAGE PREBAKE_EARLY_RUNC PREBAKE_EARLY_T0
  fi
  if [ -n "$runc_pid" ] && { mkfifo -m 600 "$st/verdict"; } 2>/dev/null; then
    node_program "$@" > "$st/verdict" 5<&- 6<&- &
    node_pid=$!
    # (The state dir gone under it, say: no verdict can come. The restore goes, a cold create.)
    if ! { command exec 8<"$st/verdict"; } 2>/dev/null; then
      kill "$node_pid" 2>/dev/null
      word=cold f1=
      return
    fi
    lines=1 k=0
    while [ $k -lt $lines ] && IFS= read -r l <&8; do
      verdict=$verdict$l$nl k=$((k + 1))
      [ $k = 1 ] && case $l in accept) lines=8 ;; restore|cold) lines=2 ;; abandon) lines=4 ;; *) break ;; esac
    done
    exec 8<&-
    [ $k = $lines ] && [ $k -gt 1 ] || { verdict=; wait "$node_pid"; rc=$?; }
  else
    verdict=$(node_program "$@" 5<&- 6<&-)
    rc=$?
  fi
  { IFS= read -r word; IFS= read -r f1; IFS= read -r f2; IFS= read -r f3; IFS= read -r f4; IFS= read -r f5; IFS= read -r f6; IFS= read -r f7; } <<EOF
$verdict
EOF
}

create_prebaked() {
  exec 5<&0
  ann= has_ann= env= has_env= capture= rootfs= multi=
  set -f; oldifs=$IFS; IFS=$nl
  for l in $facts; do
    case $l in a=*) ann=${l#a=}; has_ann=1 ;; e=*) env=${l#e=}; has_env=1 ;; c) capture=1 ;; m) multi=1 ;; r=*) rootfs=${l#r=} ;; esac
  done
  IFS=$oldifs; set +f
  # Without its Node program prebake cannot restore; the container still starts, cold.
  why=
  command -v "${PREBAKE_NODE:-node}" >/dev/null 2>&1 || why="${PREBAKE_NODE:-node} is not installed"
  [ -r "$dist/prebake.cjs" ] || why="$dist/prebake.cjs is missing (npm run build)"
  if [ -n "$why" ]; then
    log_line warning "cold start: $why"
    return 75
  fi
  # Which checkpoint a restore started before the Node program has read config.json would take.
  ckpt=
  case $env in ''|off) [ -n "$has_env" ] && ckpt=off ;; esac
  if [ -z "$ckpt" ]; then if [ -n "$has_ann" ]; then ckpt=$ann; else ckpt=$env; fi; fi
  case $ckpt in off) ckpt= ;; esac
  case $nopivot in ''|0|f|F|false|FALSE|False) nopivot= ;; *) nopivot=1 ;; esac
  case $bundle in /*) bdir=$bundle ;; *) bdir=$PWD/$bundle ;; esac
  conf=${PREBAKE_CONFIG:-/etc/prebake/config.json}
  base=${PREBAKE_STATE_DIR:-/run/prebake}
  export PREBAKE_CALLER=$$
  runc_pid= img= tried= netns= st= pid_file= t0=
  # A container id runc would refuse, or one in use: the Node program says why; no restore starts.
  case $id in ''|.|..|*[!A-Za-z0-9_.+-]*) refuse=1 ;; esac
  [ -e "$root/$id" ] && refuse=1
  case $state in /nonexistent/*) refuse=1 ;; esac
  [ -z "$refuse$late$capture$multi" ] && store_checkpoint
  [ -n "$img" ] && { start_restore "$@" || img=; }
  while :; do
    ask_node "$@"
    case $word in
      accept)
        sig=$f1 lo=$f2 host=$f3 start=$f4 log_file=$f5
        wait "$runc_pid"; status=$?
        # (Reaped: its pid is no longer runc's.)
        runc_pid=
        if ! caller_waits; then
          clear_away "$@"
          log_line warning "create abandoned: bin/prebake, which ran it, is gone; the restore it started was cleared away"
          exit 1
        fi
        if [ $status = 0 ] && finish; then
          say "$f6"
          exit 0
        fi
        say "$f7"
        netns=
        clear_away "$@"
        return 75 ;;
      restore)
        netns=
        clear_away "$@"
        img=$f1
        # Once for a path, and only while the engine still waits for this create.
        if ! caller_waits; then
          log_line warning "create abandoned: bin/prebake, which ran it, is gone; nothing was restored"
          exit 1
        fi
        case $img in /*) ;; *) return 75 ;; esac
        [ "$img" != "$tried" ] || return 75
        if ! start_restore "$@"; then
          log_line warning "cold start: $why"
          return 75
        fi ;;
      cold|abandon)
        netns=$f1
        clear_away "$@"
        [ "$word" = cold ] && return 75
        log_file=$f2
        say "$f3"
        exit 1 ;;
      *)
        # No verdict (the Node program died): what runc restored, still stopped, goes.
        clear_away "$@"
        [ "$rc" = 0 ] && rc=1
        exit $rc ;;
    esac
  done
}
