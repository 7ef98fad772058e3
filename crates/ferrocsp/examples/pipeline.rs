//! A three-stage pipeline on OS threads, shut down by retiring ends, then by poison.
//!
//! Run with `cargo run -p ferrocsp --example pipeline`.

use std::thread;

use ferrocsp::{Channel, Error};

fn main() {
    // generate -> square -> print, ended politely by retiring the writer ends.
    let (numbers, squares) = (Channel::new(0), Channel::new(4));
    let (gen_out, sq_in, sq_out, print_in) =
        (numbers.writer(), numbers.reader(), squares.writer(), squares.reader());

    let generator = thread::spawn(move || {
        for i in 1..=5u64 {
            if gen_out.write(i).is_err() {
                break;
            }
        }
        gen_out.retire();
    });
    let square = thread::spawn(move || {
        while let Ok(x) = sq_in.read() {
            if sq_out.write(x * x).is_err() {
                break;
            }
        }
        // Our input ended: end our output too, so the stream end travels downstream.
        sq_out.retire();
    });
    let mut total = 0;
    loop {
        match print_in.read() {
            Ok(x) => {
                println!("square: {x}");
                total += x;
            }
            Err(Error::Retired) => break,
            Err(e) => panic!("unexpected: {e}"),
        }
    }
    println!("sum of squares 1..=5 = {total}");
    generator.join().expect("generator thread");
    square.join().expect("square thread");

    // An endless producer stopped by poison.
    let ticks: Channel<u64> = Channel::new(0);
    let producer = {
        let ticks = ticks.clone();
        thread::spawn(move || {
            let mut n = 0;
            while ticks.write(n).is_ok() {
                n += 1;
            }
            n
        })
    };
    for _ in 0..3 {
        ticks.read().expect("tick");
    }
    ticks.poison();
    let sent = producer.join().expect("producer thread");
    println!("producer stopped by poison after {sent} values");
}
