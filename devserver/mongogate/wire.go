package mongogate

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// The parts of the MongoDB wire protocol the gate reads: the standard
// message header, and OP_MSG's flags and sections.
const (
	headerLen    = 16
	opMsg        = 2013
	maxMessage   = 48 << 20 // MongoDB's maxMessageSizeBytes
	flagChecksum = 1 << 0
	flagMoreTo   = 1 << 1
)

var le = binary.LittleEndian

// readMessage reads one whole message, header included.
func readMessage(r *bufio.Reader) ([]byte, error) {
	var head [4]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		return nil, err
	}
	n := int(int32(le.Uint32(head[:])))
	if n < headerLen || n > maxMessage {
		return nil, fmt.Errorf("message length %d out of range", n)
	}
	msg := make([]byte, n)
	copy(msg, head[:])
	if _, err := io.ReadFull(r, msg[4:]); err != nil {
		return nil, err
	}
	return msg, nil
}

func requestID(msg []byte) int32  { return int32(le.Uint32(msg[4:])) }
func responseTo(msg []byte) int32 { return int32(le.Uint32(msg[8:])) }
func opCode(msg []byte) int32     { return int32(le.Uint32(msg[12:])) }

// moreToCome reports an OP_MSG that is not to be answered (a request) or
// that more replies follow (a reply).
func moreToCome(msg []byte) bool {
	return opCode(msg) == opMsg && len(msg) >= headerLen+4 && le.Uint32(msg[headerLen:])&flagMoreTo != 0
}

// message is a parsed OP_MSG.
type message struct {
	requestID int32
	flags     uint32
	body      bson.Raw
	seqs      []sequence
}

// sequence is a kind-1 section: documents under an identifier ("updates").
type sequence struct {
	id   string
	docs []bson.Raw
}

var errNotOpMsg = errors.New("not OP_MSG")

func parseMessage(msg []byte) (*message, error) {
	if opCode(msg) != opMsg {
		return nil, errNotOpMsg
	}
	if len(msg) < headerLen+5 {
		return nil, errors.New("short OP_MSG")
	}
	m := &message{requestID: requestID(msg), flags: le.Uint32(msg[headerLen:])}
	rest := msg[headerLen+4:]
	if m.flags&flagChecksum != 0 {
		if len(rest) < 4 {
			return nil, errors.New("short OP_MSG checksum")
		}
		rest = rest[:len(rest)-4]
	}
	for len(rest) > 0 {
		kind := rest[0]
		rest = rest[1:]
		switch kind {
		case 0:
			doc, tail, err := readDoc(rest)
			if err != nil {
				return nil, err
			}
			m.body, rest = doc, tail
		case 1:
			if len(rest) < 4 {
				return nil, errors.New("short document sequence")
			}
			size := int(int32(le.Uint32(rest)))
			if size < 5 || size > len(rest) {
				return nil, errors.New("document sequence size out of range")
			}
			sec := rest[4:size]
			rest = rest[size:]
			nul := indexByte(sec, 0)
			if nul < 0 {
				return nil, errors.New("document sequence without identifier")
			}
			s := sequence{id: string(sec[:nul])}
			for sec = sec[nul+1:]; len(sec) > 0; {
				doc, tail, err := readDoc(sec)
				if err != nil {
					return nil, err
				}
				s.docs, sec = append(s.docs, doc), tail
			}
			m.seqs = append(m.seqs, s)
		default:
			return nil, fmt.Errorf("OP_MSG section kind %d", kind)
		}
	}
	if m.body == nil {
		return nil, errors.New("OP_MSG without a body")
	}
	return m, nil
}

func readDoc(b []byte) (bson.Raw, []byte, error) {
	if len(b) < 5 {
		return nil, nil, errors.New("short document")
	}
	n := int(int32(le.Uint32(b)))
	if n < 5 || n > len(b) {
		return nil, nil, errors.New("document length out of range")
	}
	return bson.Raw(b[:n]), b[n:], nil
}

func indexByte(b []byte, c byte) int {
	for i, x := range b {
		if x == c {
			return i
		}
	}
	return -1
}

// encode writes m back as a message (without a checksum: the gate changed
// it, and the checksum is optional).
func (m *message) encode() []byte {
	out := make([]byte, headerLen+4, headerLen+4+len(m.body)+64)
	le.PutUint32(out[4:], uint32(m.requestID))
	le.PutUint32(out[12:], opMsg)
	le.PutUint32(out[headerLen:], m.flags&^flagChecksum)
	out = append(out, 0)
	out = append(out, m.body...)
	for _, s := range m.seqs {
		out = append(out, 1)
		at := len(out)
		out = append(out, 0, 0, 0, 0)
		out = append(out, s.id...)
		out = append(out, 0)
		for _, d := range s.docs {
			out = append(out, d...)
		}
		le.PutUint32(out[at:], uint32(len(out)-at))
	}
	le.PutUint32(out, uint32(len(out)))
	return out
}

// encodeReply is an OP_MSG reply with body, answering request to.
func encodeReply(id, to int32, body []byte) []byte {
	m := message{requestID: id, body: body}
	out := m.encode()
	le.PutUint32(out[8:], uint32(to))
	return out
}
