package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/m40llm/m40llm/gguf"
	"github.com/m40llm/m40llm/model"
	"github.com/m40llm/m40llm/model/chat"
	"github.com/m40llm/m40llm/model/sample"
	"github.com/urfave/cli/v2"
)

// chatter is an interactive chat: the conversation so far, the settings
// /set changes, and the model and session the replies come from.
//
// A reply stopped by Ctrl-C is dropped from the conversation together
// with the message it answered. ollama drops the partial reply too but
// keeps the message, so that the next turn holds two user messages in a
// row, which templates such as llama-2's refuse (raise_exception); here
// the conversation goes on as if the stopped turn had not been typed, and
// Up recalls the message to send it again. The KV cache needs no repair:
// each turn renders the whole conversation and reuses only the cached
// prefix it shares (Session.Generate).
type chatter struct {
	c         *cli.Context
	m         *model.Model
	s         *model.Session
	tmpl      *chat.Template
	in        lineReader
	out, errw io.Writer

	params    sample.Params
	seed      int64 // -1: a new seed each reply
	maxTokens int   // ≤ 0: until the end of the turn
	ignoreEOS bool
	verbose   bool
	system    string
	history   []chat.Message // user and assistant messages, in order

	replies replyCanceler
}

// replyCanceler holds the cancel function of the reply being generated,
// for SIGINT to stop it.
type replyCanceler struct {
	mu     sync.Mutex
	cancel context.CancelFunc
}

// start returns the context of a new reply and the function that ends it.
func (r *replyCanceler) start(ctx context.Context) (context.Context, func()) {
	ctx, cancel := context.WithCancel(ctx)
	r.mu.Lock()
	r.cancel = cancel
	r.mu.Unlock()
	return ctx, func() {
		r.mu.Lock()
		r.cancel = nil
		r.mu.Unlock()
		cancel()
	}
}

// stop cancels the reply being generated; it reports false when there is
// none.
func (r *replyCanceler) stop() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cancel == nil {
		return false
	}
	r.cancel()
	return true
}

// messages returns the conversation with the system message first.
func (ch *chatter) messages() []chat.Message {
	msgs := make([]chat.Message, 0, len(ch.history)+2)
	if ch.system != "" {
		msgs = append(msgs, chat.Message{Role: "system", Content: ch.system})
	}
	return append(msgs, ch.history...)
}

// The hint printed for Ctrl-C at the prompt.
const exitHint = "Use Ctrl-D or /bye to exit."

// loop reads messages and commands until /bye, the end of input or a done
// ctx.
func (ch *chatter) loop(ctx context.Context) error {
	var (
		block       strings.Builder
		inBlock     bool
		blockSystem bool // the block is the text of /set system
	)
	for {
		if inBlock {
			ch.in.SetPrompt(promptMore)
		} else {
			ch.in.SetPrompt(promptFirst)
		}
		line, err := ch.in.ReadLine(ctx)
		switch {
		case errors.Is(err, errInterrupt):
			block.Reset()
			inBlock = false
			fmt.Fprintln(ch.errw, exitHint)
			continue
		case err == io.EOF:
			if inBlock {
				fmt.Fprintln(ch.errw, `m40llm: the input ended inside a """ block, which was not sent`)
			}
			return nil
		case err != nil && ctx.Err() != nil:
			return nil // SIGTERM, or SIGINT with input from a pipe
		case err != nil:
			return err
		}

		var msg string
		switch rest, ok := strings.CutPrefix(line, `"""`); {
		case inBlock:
			before, end := strings.CutSuffix(strings.TrimRight(line, " \t"), `"""`)
			block.WriteString(before)
			if !end {
				block.WriteByte('\n')
				continue
			}
			msg, inBlock = block.String(), false
			block.Reset()
			if blockSystem {
				ch.setSystem(msg)
				continue
			}
		case ok:
			before, end := strings.CutSuffix(strings.TrimRight(rest, " \t"), `"""`)
			if !end {
				block.WriteString(rest)
				block.WriteByte('\n')
				inBlock, blockSystem = true, false
				continue
			}
			msg = before
		case strings.HasPrefix(strings.TrimSpace(line), "/"):
			quit, startBlock, err := ch.command(strings.TrimSpace(line))
			if err != nil {
				fmt.Fprintf(ch.errw, "m40llm: %v\n", err)
			}
			if quit {
				return nil
			}
			if startBlock != nil {
				block.WriteString(*startBlock)
				block.WriteByte('\n')
				inBlock, blockSystem = true, true
			}
			continue
		default:
			msg = line
		}
		if strings.TrimSpace(msg) == "" {
			continue
		}
		if err := ch.reply(ctx, strings.TrimSpace(msg)); err != nil {
			return err
		}
		if ctx.Err() != nil {
			return nil
		}
	}
}

// reply answers text and, when the reply ends normally, adds both to the
// conversation. A reply stopped by Ctrl-C leaves the conversation as it
// was (see chatter).
func (ch *chatter) reply(ctx context.Context, text string) error {
	msgs := append(ch.messages(), chat.Message{Role: "user", Content: text})
	opts := model.GenerateOptions{MaxTokens: ch.maxTokens, Sampling: ch.params, IgnoreEOS: ch.ignoreEOS}
	if ch.seed < 0 {
		opts.Sampling.Seed = uint64(time.Now().UnixNano())
	}
	rctx, done := ch.replies.start(ctx)
	reply, err := chatTurn(rctx, ch.c, ch.m, ch.s, ch.tmpl, msgs, opts, ch.verbose)
	done()
	var skipped *turnError
	switch {
	case errors.Is(err, context.Canceled):
		return nil // stopped by Ctrl-C (or the whole chat by SIGTERM)
	case errors.As(err, &skipped) && errors.Is(err, model.ErrContextFull):
		fmt.Fprintf(ch.errw, "m40llm: %v; /reset to start over\n", err)
		return nil
	case errors.As(err, &skipped):
		fmt.Fprintf(ch.errw, "m40llm: %v\n", err)
		return nil
	case err != nil:
		return err
	}
	ch.history = append(ch.history, chat.Message{Role: "user", Content: text},
		chat.Message{Role: "assistant", Content: strings.TrimSpace(reply)})
	return nil
}

// chatCommandInfo describes a command of the chat for /help and Tab.
type chatCommandInfo struct {
	name    string
	aliases []string
	args    string
	help    string
}

// chatCommands lists the chat's commands, as /help shows them.
var chatCommands = []chatCommandInfo{
	{"/help", []string{"/?"}, "[set|show|keys]", "list the commands, /set's parameters, /show's topics or the keys"},
	{"/set", nil, "PARAMETER VALUE", "set a sampling parameter (/help set lists them)"},
	{"/set system", nil, "TEXT", `set the system message (TEXT may open a """ block)`},
	{"/set verbose", nil, "", "print statistics after each reply (/set quiet: do not)"},
	{"/show", nil, "[info|parameters|system|template]", "show the model and how much of the context is in use"},
	{"/reset", []string{"/clear"}, "", "forget the conversation (the system message stays)"},
	{"/bye", []string{"/exit", "/quit"}, "", "leave the chat (as Ctrl-D on an empty line)"},
}

// command runs the chat command line (it starts with "/"). quit ends the
// chat; a non-nil block is the first line of a """ block that /set system
// opened. Its errors are one line, for the user: the chat goes on.
func (ch *chatter) command(line string) (quit bool, block *string, err error) {
	name, args, _ := strings.Cut(line, " ")
	args = strings.TrimSpace(args)
	switch name {
	case "/bye", "/exit", "/quit":
		return true, nil, nil
	case "/help", "/?":
		return false, nil, ch.help(args)
	case "/reset", "/clear":
		ch.history = nil
		ch.s.Reset()
		fmt.Fprintln(ch.errw, "Cleared the conversation.")
		return false, nil, nil
	case "/set":
		return ch.set(args)
	case "/show":
		return false, nil, ch.show(args)
	}
	return false, nil, fmt.Errorf("unknown command %s; /help lists commands", name)
}

func (ch *chatter) help(topic string) error {
	w := ch.errw
	switch topic {
	case "":
		fmt.Fprintln(w, "Commands:")
		for _, c := range chatCommands {
			name := strings.Join(append([]string{c.name}, c.aliases...), ", ")
			if c.args != "" {
				name += " " + c.args
			}
			fmt.Fprintf(w, "  %-40s %s\n", name, c.help)
		}
		fmt.Fprintln(w, `Use """ to begin a message of several lines; a line ending with """ ends it.`)
		fmt.Fprintln(w, "A line that starts with / is a command; to send one to the model, put it in a \"\"\" block.")
	case "set", "/set":
		fmt.Fprintln(w, "Parameters (/set NAME VALUE, or /set parameter NAME VALUE as in ollama):")
		for _, p := range chatParams {
			fmt.Fprintf(w, "  %-18s %-8s %s (--%s)\n", p.name, p.kind, p.help, p.flag)
		}
		fmt.Fprintln(w, "  /set system TEXT    set the system message")
		fmt.Fprintln(w, "  /set verbose        print statistics after each reply; /set quiet: do not")
	case "show", "/show":
		fmt.Fprintln(w, "Topics (/show alone: info):")
		fmt.Fprintln(w, "  /show info          architecture, parameters, quantization, context length and use")
		fmt.Fprintln(w, "  /show parameters    the sampling parameters in use")
		fmt.Fprintln(w, "  /show system        the system message")
		fmt.Fprintln(w, "  /show template      the chat template")
	case "keys", "shortcuts":
		fmt.Fprintln(w, "Keys:")
		fmt.Fprintln(w, "  Up, Down            previous and next line of the history (Ctrl-P, Ctrl-N)")
		fmt.Fprintln(w, "  Ctrl-R              search the history")
		fmt.Fprintln(w, "  Ctrl-A, Ctrl-E      start and end of the line")
		fmt.Fprintln(w, "  Alt-B, Alt-F        one word back and forward")
		fmt.Fprintln(w, "  Ctrl-K, Ctrl-U      delete to the end or the start of the line")
		fmt.Fprintln(w, "  Ctrl-W              delete the word before the cursor")
		fmt.Fprintln(w, "  Tab                 complete a command")
		fmt.Fprintln(w, "  Ctrl-C              clear the line; during a reply, stop it")
		fmt.Fprintln(w, "  Ctrl-D              on an empty line, leave the chat")
	default:
		return fmt.Errorf("/help %s: no such topic; try /help, /help set, /help show or /help keys", topic)
	}
	return nil
}

// chatParam is a sampling parameter of /set, under ollama's name.
type chatParam struct {
	name, flag, kind, help string
	get                    func(ch *chatter) string
	// set stores v, or says in a few words what v must be.
	set func(ch *chatter, v string) error
}

// chatParams are the parameters /set sets.
var chatParams = []chatParam{
	{"temperature", "temp", "<float>", "0 is greedy",
		func(ch *chatter) string { return fmtFloat(ch.params.Temperature) },
		floatParam(func(p *sample.Params) *float32 { return &p.Temperature })},
	{"top_k", "top-k", "<int>", "keep the K most likely tokens (0: off)",
		func(ch *chatter) string { return strconv.Itoa(ch.params.TopK) },
		intParam(func(p *sample.Params) *int { return &p.TopK })},
	{"top_p", "top-p", "<float>", "keep the most likely tokens up to this probability (1: off)",
		func(ch *chatter) string { return fmtFloat(ch.params.TopP) },
		floatParam(func(p *sample.Params) *float32 { return &p.TopP })},
	{"min_p", "min-p", "<float>", "drop tokens less likely than this times the most likely (0: off)",
		func(ch *chatter) string { return fmtFloat(ch.params.MinP) },
		floatParam(func(p *sample.Params) *float32 { return &p.MinP })},
	{"repeat_penalty", "repeat-penalty", "<float>", "penalise repeated tokens (1: off)",
		func(ch *chatter) string { return fmtFloat(ch.params.RepeatPenalty) },
		floatParam(func(p *sample.Params) *float32 { return &p.RepeatPenalty })},
	{"repeat_last_n", "repeat-last-n", "<int>", "tokens the penalties look back at (-1: all)",
		func(ch *chatter) string { return strconv.Itoa(ch.params.RepeatLastN) },
		intParam(func(p *sample.Params) *int { return &p.RepeatLastN })},
	{"presence_penalty", "presence-penalty", "<float>", "subtract from tokens already present",
		func(ch *chatter) string { return fmtFloat(ch.params.PresencePenalty) },
		floatParam(func(p *sample.Params) *float32 { return &p.PresencePenalty })},
	{"frequency_penalty", "frequency-penalty", "<float>", "subtract per occurrence",
		func(ch *chatter) string { return fmtFloat(ch.params.FrequencyPenalty) },
		floatParam(func(p *sample.Params) *float32 { return &p.FrequencyPenalty })},
	{"seed", "seed", "<int>", "random seed (-1: a new one each reply)",
		func(ch *chatter) string { return strconv.FormatInt(ch.seed, 10) },
		func(ch *chatter, v string) error {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < -1 {
				return errors.New("want -1 (a new seed each reply) or a whole number ≥ 0")
			}
			ch.seed = n
			if n >= 0 {
				ch.params.Seed = uint64(n)
			}
			return nil
		}},
	{"num_predict", "n-predict", "<int>", "largest reply in tokens (-1: until the end of the turn)",
		func(ch *chatter) string {
			if ch.maxTokens <= 0 {
				return "-1"
			}
			return strconv.Itoa(ch.maxTokens)
		},
		func(ch *chatter, v string) error {
			n, err := strconv.Atoi(v)
			if err != nil || n == 0 || n < -1 {
				return errors.New("want -1 (until the end of the turn) or a positive whole number")
			}
			ch.maxTokens = n
			return nil
		}},
}

// fmtFloat prints a float32 as it is written (0.8, not 0.800000011920929).
func fmtFloat(x float32) string { return strconv.FormatFloat(float64(x), 'g', -1, 32) }

// floatParam sets the float field of sample.Params that field names,
// refusing what the sampler would refuse.
func floatParam(field func(*sample.Params) *float32) func(*chatter, string) error {
	return func(ch *chatter, v string) error {
		f, err := strconv.ParseFloat(v, 32)
		if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
			return errors.New("want a number")
		}
		p := ch.params
		*field(&p) = float32(f)
		return ch.setParams(p)
	}
}

// intParam is floatParam for an int field.
func intParam(field func(*sample.Params) *int) func(*chatter, string) error {
	return func(ch *chatter, v string) error {
		n, err := strconv.Atoi(v)
		if err != nil {
			return errors.New("want a whole number")
		}
		p := ch.params
		*field(&p) = n
		return ch.setParams(p)
	}
}

// setParams makes p the sampling parameters if the sampler takes them.
func (ch *chatter) setParams(p sample.Params) error {
	if _, err := sample.New(p); err != nil {
		var pe *sample.ParamError
		if errors.As(err, &pe) {
			return errors.New(pe.Reason)
		}
		return err
	}
	ch.params = p
	return nil
}

// set runs /set with args.
func (ch *chatter) set(args string) (quit bool, block *string, err error) {
	name, value, _ := strings.Cut(args, " ")
	value = strings.TrimSpace(value)
	switch name {
	case "":
		return false, nil, errors.New("/set needs a parameter and a value, or system TEXT; /help set lists them")
	case "parameter": // ollama's form: /set parameter NAME VALUE
		name, value, _ = strings.Cut(value, " ")
		value = strings.TrimSpace(value)
	case "system":
		rest, ok := strings.CutPrefix(value, `"""`)
		switch before, end := strings.CutSuffix(strings.TrimRight(rest, " \t"), `"""`); {
		case ok && !end:
			return false, &rest, nil
		case ok:
			value = before
		}
		if strings.TrimSpace(value) == "" {
			return false, nil, errors.New("/set system needs the text of the message")
		}
		ch.setSystem(value)
		return false, nil, nil
	case "verbose", "quiet":
		ch.verbose = name == "verbose"
		fmt.Fprintf(ch.errw, "Set %s mode.\n", name)
		return false, nil, nil
	}
	for _, p := range chatParams {
		if p.name != name {
			continue
		}
		if value == "" || strings.ContainsAny(value, " \t") {
			return false, nil, fmt.Errorf("/set %s needs one value: %s", name, p.kind)
		}
		if err := p.set(ch, value); err != nil {
			return false, nil, fmt.Errorf("/set %s %s: %v", name, value, err)
		}
		fmt.Fprintf(ch.errw, "Set %s to %s.\n", name, p.get(ch))
		return false, nil, nil
	}
	return false, nil, fmt.Errorf("/set %s: no such parameter; /help set lists them", name)
}

// setSystem makes text the system message.
func (ch *chatter) setSystem(text string) {
	ch.system = strings.TrimSpace(text)
	fmt.Fprintln(ch.errw, "Set the system message.")
}

// show runs /show with topic.
func (ch *chatter) show(topic string) error {
	w := ch.errw
	switch topic {
	case "", "info":
		return ch.showInfo()
	case "parameters":
		for _, p := range chatParams {
			fmt.Fprintf(w, "  %-18s %s\n", p.name, p.get(ch))
		}
	case "system":
		if ch.system == "" {
			fmt.Fprintln(w, "No system message is set.")
		} else {
			fmt.Fprintln(w, ch.system)
		}
	case "template":
		fmt.Fprintf(w, "Chat template %s:\n%s\n", ch.tmpl.Name(), ch.tmpl.Source())
	default:
		return fmt.Errorf("/show %s: no such topic; try info, parameters, system or template", topic)
	}
	return nil
}

func (ch *chatter) showInfo() error {
	cfg := ch.m.Config
	path := ch.c.String("model")
	f, err := gguf.Open(path)
	if err != nil {
		return fmt.Errorf("/show: %w", err)
	}
	params, fileType := f.ParameterCount(), fileTypeName(f)
	f.Close()
	w := ch.errw
	fmt.Fprintln(w, "Model")
	fmt.Fprintf(w, "  %-20s %s\n", "file", path)
	fmt.Fprintf(w, "  %-20s %s\n", "architecture", cfg.Arch)
	fmt.Fprintf(w, "  %-20s %s\n", "parameters", humanCount(params))
	fmt.Fprintf(w, "  %-20s %s\n", "quantization", fileType)
	fmt.Fprintf(w, "  %-20s %d\n", "context length", cfg.ContextLength)
	fmt.Fprintf(w, "  %-20s %d\n", "embedding length", cfg.Dim)
	fmt.Fprintf(w, "  %-20s %d\n", "layers", cfg.Layers)
	fmt.Fprintf(w, "  %-20s %d\n", "vocabulary", cfg.VocabSize)
	fmt.Fprintln(w, "Chat")
	fmt.Fprintf(w, "  %-20s %s\n", "template", ch.tmpl.Name())
	fmt.Fprintf(w, "  %-20s %d of %d tokens (%d messages)\n", "context in use", ch.contextUse(), ch.m.CtxSize(), len(ch.messages()))
	return nil
}

// contextUse returns how many positions of the context the conversation
// takes: its tokens as the next turn renders them, before the new
// message; the cached positions when the template refuses to render the
// conversation alone.
func (ch *chatter) contextUse() int {
	msgs := ch.messages()
	if len(msgs) == 0 {
		return 0
	}
	ids, _, err := ch.m.ChatTokens(context.Background(), ch.tmpl, msgs,
		model.ChatOptions{AllowSpecialInContent: ch.c.Bool("allow-special-in-content")})
	if err != nil {
		return ch.s.Len()
	}
	return len(ids)
}
