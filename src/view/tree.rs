//! The inode tree of a view, built once from index rows: `<volumeID>/<file path>` for every
//! part shown in its volume's folder, `<file path>` for those at the root. Lookups and directory
//! listings never leave memory.

use std::collections::BTreeMap;

use crate::index::FileRow;
use crate::names::VolumeId;

pub const ROOT: u64 = 1;

#[derive(Debug)]
pub enum NodeKind {
    Dir {
        children: BTreeMap<String, u64>,
    },
    /// A file of part `part` of the view.
    File {
        row: FileRow,
        part: usize,
    },
}

#[derive(Debug)]
pub struct Node {
    pub parent: u64,
    pub kind: NodeKind,
}

#[derive(Debug)]
pub struct Tree {
    /// Inode `n` is `nodes[n - 1]`; inodes never change for the life of a mount.
    nodes: Vec<Node>,
    files: u64,
}

impl Tree {
    pub fn new() -> Tree {
        Tree {
            nodes: vec![Node {
                parent: ROOT,
                kind: NodeKind::Dir {
                    children: BTreeMap::new(),
                },
            }],
            files: 0,
        }
    }

    pub fn get(&self, ino: u64) -> Option<&Node> {
        self.nodes.get(ino.checked_sub(1)? as usize)
    }

    /// Inodes, the root included: numbers 1..=inode_count() are taken.
    pub fn inode_count(&self) -> u64 {
        self.nodes.len() as u64
    }

    pub fn file_count(&self) -> u64 {
        self.files
    }

    pub fn lookup(&self, parent: u64, name: &str) -> Option<u64> {
        match &self.get(parent)?.kind {
            NodeKind::Dir { children } => children.get(name).copied(),
            NodeKind::File { .. } => None,
        }
    }

    fn dir(&mut self, parent: u64, name: &str) -> Result<u64, String> {
        if let Some(existing) = self.lookup(parent, name) {
            return match self.nodes[existing as usize - 1].kind {
                NodeKind::Dir { .. } => Ok(existing),
                NodeKind::File { .. } => Err(format!("{name} is both a file and a directory")),
            };
        }
        self.add(
            parent,
            name,
            NodeKind::Dir {
                children: BTreeMap::new(),
            },
        )
    }

    fn add(&mut self, parent: u64, name: &str, kind: NodeKind) -> Result<u64, String> {
        let ino = self.nodes.len() as u64 + 1;
        match &mut self.nodes[parent as usize - 1].kind {
            NodeKind::Dir { children } => {
                if children.insert(name.to_string(), ino).is_some() {
                    return Err(format!("{name} appears twice"));
                }
            }
            NodeKind::File { .. } => return Err(format!("{name} is below a file")),
        }
        self.nodes.push(Node { parent, kind });
        Ok(ino)
    }

    /// Adds the files of part `part` under its volume's folder (`None`: at the root). Volumes may
    /// nest (`a` and `a/b`) but a volume's folder must not exist yet: two parts of one volume in a
    /// view would be ambiguous.
    pub fn add_part(&mut self, volume: Option<&VolumeId>, part: usize, files: Vec<FileRow>) -> Result<(), String> {
        let mut dir = ROOT;
        let parts: Vec<&str> = volume.map(|v| v.components().collect()).unwrap_or_default();
        for (i, part) in parts.iter().enumerate() {
            if i == parts.len() - 1 && self.lookup(dir, part).is_some() {
                return Err(format!(
                    "volume {} is shown twice or collides with another volume's files",
                    volume.map(VolumeId::as_str).unwrap_or_default()
                ));
            }
            dir = self.dir(dir, part)?;
        }
        for row in files {
            let mut parent = dir;
            let parts: Vec<String> = row.path.components().map(str::to_string).collect();
            let (name, dirs) = parts.split_last().expect("paths have a component");
            for part in dirs {
                parent = self.dir(parent, part)?;
            }
            self.add(parent, name, NodeKind::File { row, part })?;
            self.files += 1;
        }
        Ok(())
    }
}

impl Default for Tree {
    fn default() -> Self {
        Tree::new()
    }
}
